"""The Redis broker transport against the real kombu and Celery: one queue, either side.

kombu publishes and celeriac consumes, and the reverse, with the same bytes, headers and
properties; each side restores the other's expired deliveries; a Celery client's tasks run on
a ``celeriac worker`` and a celeriac client's on a ``celery worker``, both on Redis, and both
workers can share one queue.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

kombu = pytest.importorskip("kombu")
redis = pytest.importorskip("redis")

from celeriac.transports.base import Delivery  # noqa: E402
from celeriac.transports.redis import RedisTransport  # noqa: E402
from tests.compat import test_interop as interop  # noqa: E402

pytestmark = pytest.mark.integration

URL = os.environ.get("CELERIAC_TEST_REDIS_BROKER", "redis://127.0.0.1:6379/14")
SEP = "\x06\x16"


@pytest.fixture
def rclient() -> Iterator[Any]:
    client = redis.Redis.from_url(URL)
    yield client
    client.close()


@pytest.fixture
def prefix(rclient: Any) -> Iterator[str]:
    name = f"celeriac-compat-{uuid.uuid4().hex[:10]}:"
    yield name
    keys = list(rclient.scan_iter(match=f"{name}*"))
    if keys:
        rclient.delete(*keys)


@pytest.fixture
def queue(rclient: Any) -> Iterator[str]:
    """A queue name no other run uses; its lists and bindings are deleted afterwards."""
    name = f"celeriac.test.redis.{uuid.uuid4().hex[:10]}"
    yield name
    keys = [*rclient.scan_iter(match=f"{name}*"), *rclient.scan_iter(match=f"*binding*{name}")]
    if keys:
        rclient.delete(*keys)


def kombu_connection(prefix: str, **options: Any) -> Any:
    return kombu.Connection(URL, transport_options={"global_keyprefix": prefix, **options})


def kombu_queue(name: str) -> Any:
    return kombu.Queue(name, kombu.Exchange(name, "direct"), routing_key=name)


def drain_until(t: RedisTransport, got: list[Any], count: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while len(got) < count:
        assert time.monotonic() < deadline, f"got {len(got)} of {count}"
        t.drain_events(0.2)


PROPERTIES = {"correlation_id": "c-1", "reply_to": "reply.q", "priority": 4}
HEADERS = {"task": "proj.add", "id": "c-1", "retries": 0, "timelimit": [None, None]}
BODY = b'[[2, 3], {}, {"callbacks": null}]\x00\xff'


def test_kombu_publishes_celeriac_consumes(prefix: str, rclient: Any) -> None:
    with kombu_connection(prefix) as conn:
        conn.Producer().publish(
            BODY,
            exchange=kombu_queue("q").exchange,
            routing_key="q",
            declare=[kombu_queue("q")],
            headers=HEADERS,
            content_type="application/json",
            content_encoding="binary",
            expiration=60,
            **PROPERTIES,
        )
    with RedisTransport(URL, global_keyprefix=prefix) as t:
        got: list[Delivery] = []
        t.consume("q", got.append)
        drain_until(t, got, 1)
        d = got[0]
        assert d.body == BODY
        assert d.headers == HEADERS
        assert d.properties == {
            **PROPERTIES,
            "delivery_mode": 2,
            "expiration": "60000",
            "content_type": "application/json",
            "content_encoding": "binary",
        }
        assert d.delivery_info["exchange"] == "q"
        assert d.delivery_info["routing_key"] == "q"
        # the unacked entry is kombu's own envelope, under kombu's tag
        [tag] = rclient.hkeys(f"{prefix}unacked")
        t.ack(d.delivery_tag)
        assert not rclient.hexists(f"{prefix}unacked", tag)


def test_celeriac_publishes_kombu_consumes(prefix: str, rclient: Any) -> None:
    with RedisTransport(URL, global_keyprefix=prefix) as t:
        t.declare_exchange("q", "direct")
        t.declare_queue("q")
        t.bind_queue("q", "q", "q")
        props = {"content_type": "application/json", "content_encoding": "binary", **PROPERTIES}
        t.publish(BODY, "q", "q", HEADERS, props)
    with kombu_connection(prefix) as conn:
        messages: list[Any] = []
        # on_message: the raw message, its body not decoded
        consumer = conn.Consumer(kombu_queue("q"), on_message=messages.append)
        with consumer:
            conn.drain_events(timeout=5)
        m = messages[0]
        assert m.body == BODY
        assert m.headers == HEADERS
        assert (m.content_type, m.content_encoding) == ("application/json", "binary")
        for name, value in PROPERTIES.items():
            assert m.properties[name] == value
        assert m.delivery_info["exchange"] == "q"
        assert m.delivery_info["routing_key"] == "q"
        m.ack()
    assert rclient.hlen(f"{prefix}unacked") == 0


def test_kombu_restores_celeriacs_expired_deliveries(prefix: str, rclient: Any) -> None:
    t = RedisTransport(URL, global_keyprefix=prefix)
    t.connect()
    t.declare_exchange("q")
    t.bind_queue("q", "q", "q")
    for i in range(3):
        t.publish(str(i).encode(), "q", "q", None, {"priority": 0})
    got: list[Delivery] = []
    t.consume("q", got.append)
    drain_until(t, got, 3)
    time.sleep(1.1)
    # celeriac stops answering; kombu's sweep takes its deliveries back
    with kombu_connection(prefix, visibility_timeout=1) as conn:
        conn.default_channel.qos.restore_visible()
        messages: list[Any] = []
        with conn.Consumer(kombu_queue("q"), on_message=messages.append):
            while len(messages) < 3:
                conn.drain_events(timeout=5)
        for m in messages:
            m.ack()
    assert sorted(m.body for m in messages) == [b"0", b"1", b"2"]
    assert all(m.delivery_info["redelivered"] for m in messages)
    assert rclient.hlen(f"{prefix}unacked") == 0
    t.close()
    assert rclient.llen(f"{prefix}q") == 0  # nothing restored twice


def test_celeriac_restores_kombus_expired_deliveries(prefix: str, rclient: Any) -> None:
    conn = kombu_connection(prefix)
    producer = conn.Producer()
    for i in range(3):
        producer.publish(
            {"n": i},
            exchange=kombu_queue("q").exchange,
            routing_key="q",
            declare=[kombu_queue("q")],
        )
    taken: list[Any] = []
    consumer = conn.Consumer(kombu_queue("q"), callbacks=[lambda _b, m: taken.append(m)])
    consumer.consume()
    while len(taken) < 3:
        conn.drain_events(timeout=5)
    assert rclient.hlen(f"{prefix}unacked") == 3
    # kombu's consumer stops answering (never acks, never closes)
    time.sleep(1.1)
    with RedisTransport(URL, global_keyprefix=prefix, visibility_timeout=1) as t:
        got: list[Delivery] = []
        t.consume("q", got.append)
        drain_until(t, got, 3)
        assert sorted(d.body for d in got) == [b'{"n": 0}', b'{"n": 1}', b'{"n": 2}']
        assert all(d.delivery_info["redelivered"] for d in got)
        for d in got:
            t.ack(d.delivery_tag)
    assert rclient.hlen(f"{prefix}unacked") == 0
    conn.release()


def test_kombu_and_celeriac_consume_one_queue(prefix: str) -> None:
    with RedisTransport(URL, global_keyprefix=prefix) as t, kombu_connection(prefix) as conn:
        t.declare_exchange("q")
        t.bind_queue("q", "q", "q")
        for i in range(20):
            t.publish(str(i).encode(), "q", "q")
        ours: list[Delivery] = []
        theirs: list[bytes] = []

        t.qos(1)
        t.consume("q", lambda d: (ours.append(d), t.ack(d.delivery_tag)))

        def on_message(message: Any) -> None:
            theirs.append(message.body)
            message.ack()

        with conn.Consumer(kombu_queue("q"), on_message=on_message) as consumer:
            consumer.qos(prefetch_count=1)
            deadline = time.monotonic() + 10
            while len(ours) + len(theirs) < 20 and time.monotonic() < deadline:
                t.drain_events(0.05)
                with contextlib.suppress(TimeoutError):
                    conn.drain_events(timeout=0.05)
    bodies = sorted([d.body for d in ours] + theirs, key=int)
    assert bodies == [str(i).encode() for i in range(20)]
    assert ours and theirs


# -- workers -------------------------------------------------------------------------------


def celery_worker_answers(broker: str) -> bool:
    probe = (
        "import sys, celery; "
        "app = celery.Celery('probe', broker=sys.argv[1], set_as_current=False); "
        "sys.exit(0 if app.control.ping(timeout=0.5) else 1)"
    )
    return subprocess.run([sys.executable, "-c", probe, broker], timeout=60).returncode == 0


@pytest.fixture
def redis_broker(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(interop, "BROKER", URL)
    return URL


@pytest.mark.parametrize(("client", "worker"), [("celery", "celeriac"), ("celeriac", "celery")])
def test_tasks_cross_over_on_redis(
    client: str, worker: str, queue: str, redis_broker: str, rclient: Any
) -> None:
    proc = interop.start_worker_process(worker, queue, interop.REDIS)
    app = interop.client_app(client, queue, interop.REDIS)
    try:
        assert app.send_task("interop.echo", (1,)).get(timeout=60) == [[1], {}]
        results = [app.send_task("interop.echo", (i,), {"k": "ü"}) for i in range(30)]
        assert [r.get(timeout=30) for r in results] == [[[i], {"k": "ü"}] for i in range(30)]
        with pytest.raises(interop.InteropError):
            app.send_task("interop.fail", ("bad", 7)).get(timeout=30)
        assert app.send_task("interop.retry_twice", (5,)).get(timeout=30) == [5, 2]
        assert rclient.exists(f"_kombu.binding.{queue}")  # it went through this Redis
    finally:
        output = interop.stop_worker_process(proc)
        app.close()
    assert proc.returncode == 0, output


def test_celery_and_celeriac_workers_share_a_queue(queue: str, redis_broker: str) -> None:
    ours = interop.start_worker_process("celeriac", queue, interop.REDIS)
    theirs = interop.start_worker_process("celery", queue, interop.REDIS)
    app = interop.client_app("celery", queue, interop.REDIS)
    try:
        assert app.send_task("interop.echo", (0,)).get(timeout=60) == [[0], {}]
        # Celery's worker answers pings once it consumes (and only then handles SIGTERM). The
        # ping runs in a process of its own: the reply consumer it leaves behind would make
        # every process forked from this one later (prefork tests) hang closing it.
        deadline = time.monotonic() + 60
        while not celery_worker_answers(redis_broker):
            assert time.monotonic() < deadline, "the celery worker did not start"
        results = [app.send_task("interop.echo", (i,)) for i in range(60)]
        assert [r.get(timeout=60) for r in results] == [[[i], {}] for i in range(60)]
    finally:
        outputs = [interop.stop_worker_process(p) for p in (ours, theirs)]
        app.close()
    assert ours.returncode == 0, outputs[0]
    assert theirs.returncode == 0, outputs[1]
