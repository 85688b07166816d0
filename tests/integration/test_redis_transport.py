"""The Redis broker transport against a real Redis: kombu's layout, acks, prefetch, restores."""

from __future__ import annotations

import base64
import json
import os
import select
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

redis = pytest.importorskip("redis")

from celeriac.errors import ChannelError, ConfigurationError, ConnectionError  # noqa: E402
from celeriac.transports._redis_options import parse_options  # noqa: E402
from celeriac.transports.base import Delivery  # noqa: E402
from celeriac.transports.redis import RedisTransport  # noqa: E402
from celeriac.transports.registry import transport_for_url  # noqa: E402

pytestmark = pytest.mark.integration

URL = os.environ.get("CELERIAC_TEST_REDIS_BROKER", "redis://127.0.0.1:6379/14")
SEP = "\x06\x16"

Factory = Callable[..., RedisTransport]


@pytest.fixture
def rclient() -> Iterator[Any]:
    client = redis.Redis.from_url(URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.fail(f"redis at {URL} does not answer ({exc})", pytrace=False)
    yield client
    client.close()


@pytest.fixture
def prefix(rclient: Any) -> Iterator[str]:
    """A global_keyprefix of this test's own, so its unacked entries are its own too."""
    name = f"celeriac-test-{uuid.uuid4().hex[:10]}:"
    yield name
    keys = list(rclient.scan_iter(match=f"{name}*"))
    if keys:
        rclient.delete(*keys)


@pytest.fixture
def make(prefix: str) -> Iterator[Factory]:
    made: list[RedisTransport] = []

    def factory(**options: Any) -> RedisTransport:
        options.setdefault("global_keyprefix", prefix)
        t = RedisTransport(URL, **options)
        t.connect()
        made.append(t)
        return t

    yield factory
    for t in made:
        t.close()


def declare(t: RedisTransport, queue: str) -> None:
    t.declare_exchange(queue, "direct")
    t.declare_queue(queue)
    t.bind_queue(queue, queue, queue)


def collect(t: RedisTransport, queue: str, ack: bool = False, **kw: Any) -> list[Delivery]:
    got: list[Delivery] = []

    def on_delivery(delivery: Delivery) -> None:
        got.append(delivery)
        if ack:
            t.ack(delivery.delivery_tag)

    t.consume(queue, on_delivery, **kw)
    return got


def drain_until(t: RedisTransport, cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out waiting for deliveries"
        t.drain_events(0.2)


def drain_for(t: RedisTransport, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        t.drain_events(max(0.0, deadline - time.monotonic()))


def readable(fds: tuple[int, ...], timeout: float = 0.0) -> list[int]:
    return list(select.select(fds, [], [], timeout)[0])


# -- the wire ------------------------------------------------------------------------------


def test_publish_writes_kombus_envelope_and_binding(
    make: Factory, rclient: Any, prefix: str
) -> None:
    t = make()
    declare(t, "q")
    assert rclient.smembers(f"{prefix}_kombu.binding.q") == {f"q{SEP}{SEP}q".encode()}
    assert rclient.smembers(f"{prefix}_kombu.binding_permanent.q") == {f"q{SEP}{SEP}q".encode()}
    headers = {"task": "proj.add", "id": "abc", "eta": None}
    props = {
        "content_type": "application/json",
        "content_encoding": "utf-8",
        "correlation_id": "abc",
        "reply_to": "r",
        "delivery_mode": 2,
    }
    t.publish(b"\x00\xffbody", "q", "q", headers, props)
    [raw] = rclient.lrange(f"{prefix}q", 0, -1)
    env = json.loads(raw)
    assert list(env) == ["body", "content-encoding", "content-type", "headers", "properties"]
    assert base64.b64decode(env["body"]) == b"\x00\xffbody"
    assert env["content-type"] == "application/json"
    assert env["content-encoding"] == "utf-8"
    assert env["headers"] == headers
    p = env["properties"]
    assert p["delivery_info"] == {"exchange": "q", "routing_key": "q"}
    assert p["priority"] == 0
    assert p["body_encoding"] == "base64"
    assert uuid.UUID(p["delivery_tag"]).version == 4
    assert (p["correlation_id"], p["reply_to"], p["delivery_mode"]) == ("abc", "r", 2)
    assert "content_type" not in p


def test_round_trip_and_ack(make: Factory, rclient: Any, prefix: str) -> None:
    t = make()
    declare(t, "q")
    props = {"content_type": "application/json", "correlation_id": "c1", "priority": 0}
    t.publish(b'{"a": 1}', "", "q", {"task": "t", "id": "c1"}, props)
    got = collect(t, "q")
    drain_until(t, lambda: len(got) == 1)
    d = got[0]
    assert d.body == b'{"a": 1}'
    assert d.headers == {"task": "t", "id": "c1"}
    assert d.properties["content_type"] == "application/json"
    assert d.properties["correlation_id"] == "c1"
    assert d.delivery_info["routing_key"] == "q"
    assert d.delivery_info["redelivered"] is False
    assert d.delivery_tag == 1
    # stored as kombu stores it while unacked
    [(uuid_tag, entry)] = rclient.hgetall(f"{prefix}unacked").items()
    envelope, exchange, routing_key = json.loads(entry)
    assert (exchange, routing_key) == ("", "q")
    assert envelope["properties"]["delivery_tag"] == uuid_tag.decode()
    assert rclient.zscore(f"{prefix}unacked_index", uuid_tag) == pytest.approx(time.time(), abs=5)
    t.ack(d.delivery_tag)
    assert rclient.hlen(f"{prefix}unacked") == 0
    assert rclient.zcard(f"{prefix}unacked_index") == 0
    with pytest.raises(ChannelError):
        t.ack(d.delivery_tag)
    # waiting on an empty queue (BRPOP): recorded the same way once it arrives
    drain_for(t, 0.3)
    t.publish(b"later", "q", "q", None, props)
    drain_until(t, lambda: len(got) == 2)
    [(uuid_tag, entry)] = rclient.hgetall(f"{prefix}unacked").items()
    envelope, exchange, routing_key = json.loads(entry)
    assert (exchange, routing_key) == ("q", "q")
    assert envelope["properties"]["delivery_tag"] == uuid_tag.decode()
    t.ack(got[1].delivery_tag)
    assert rclient.hlen(f"{prefix}unacked") == 0


def test_without_scripting_brpop_alone_delivers(make: Factory, rclient: Any, prefix: str) -> None:
    t = make()
    declare(t, "q")
    assert t._poller is not None
    t._poller.scripting = False  # as when Redis refuses EVAL
    for i in range(5):
        t.publish(str(i).encode(), "", "q")
    t.qos(2)
    got = collect(t, "q", ack=True)
    drain_until(t, lambda: len(got) == 5)
    assert [d.body for d in got] == [str(i).encode() for i in range(5)]
    assert rclient.hlen(f"{prefix}unacked") == 0


def test_multiple_ack_settles_every_earlier_tag(make: Factory, rclient: Any, prefix: str) -> None:
    t = make()
    declare(t, "q")
    for i in range(5):
        t.publish(str(i).encode(), "", "q")
    got = collect(t, "q")
    drain_until(t, lambda: len(got) == 5)
    t.ack(4, multiple=True)
    assert rclient.hlen(f"{prefix}unacked") == 1
    t.ack(5)
    assert rclient.hlen(f"{prefix}unacked") == 0


def test_reject_requeue_goes_to_the_back_and_drop_is_gone(
    make: Factory, rclient: Any, prefix: str
) -> None:
    t = make()
    declare(t, "q")
    for body in (b"a", b"b", b"c"):
        t.publish(body, "q", "q")
    got = collect(t, "q")
    drain_until(t, lambda: len(got) >= 1)
    t.reject(got[0].delivery_tag, requeue=True)
    drain_until(t, lambda: len(got) == 4)
    assert [d.body for d in got] == [b"a", b"b", b"c", b"a"]
    assert got[3].delivery_info["redelivered"] is True
    assert got[3].headers is not None and got[3].headers["redelivered"] is True
    for d in got[1:]:
        t.reject(d.delivery_tag, requeue=False)
    drain_for(t, 0.3)
    assert len(got) == 4
    assert rclient.hlen(f"{prefix}unacked") == 0
    assert t.declare_queue("q", passive=True).message_count == 0


def test_prefetch_is_respected(make: Factory, rclient: Any, prefix: str) -> None:
    t = make()
    declare(t, "q")
    for i in range(10):
        t.publish(str(i).encode(), "", "q")
    t.qos(3)
    got = collect(t, "q")
    drain_for(t, 1.5)
    assert len(got) == 3
    assert rclient.hlen(f"{prefix}unacked") == 3
    assert t.declare_queue("q", passive=True).message_count == 7
    t.ack(got[0].delivery_tag)
    drain_until(t, lambda: len(got) == 4)
    drain_for(t, 0.5)
    assert len(got) == 4
    t.ack(got[3].delivery_tag, multiple=True)
    drain_until(t, lambda: len(got) == 7)
    assert [d.body for d in got] == [str(i).encode() for i in range(7)]


def test_priorities_ordered_as_kombu_orders_them(make: Factory, rclient: Any, prefix: str) -> None:
    t = make()
    declare(t, "q")
    priorities = [9, 0, 5, 3, 6, 1, 2, 8]
    for i, pri in enumerate(priorities):
        t.publish(f"{i}:{pri}".encode(), "q", "q", None, {"priority": pri})
    assert rclient.llen(f"{prefix}q") == 3  # 0, 1, 2
    assert rclient.llen(f"{prefix}q{SEP}3") == 2  # 5, 3
    assert rclient.llen(f"{prefix}q{SEP}6") == 2  # 6, 8
    assert rclient.llen(f"{prefix}q{SEP}9") == 1
    assert t.declare_queue("q", passive=True).message_count == 8
    got = collect(t, "q", ack=True)
    drain_until(t, lambda: len(got) == 8)
    # a lower number first on Redis, first in first out within a step
    order = [int(d.body.split(b":")[1]) for d in got]
    assert order == [0, 1, 2, 5, 3, 6, 8, 9]
    assert [d.properties["priority"] for d in got] == order


def test_queues_take_turns(make: Factory) -> None:
    t = make()
    for q in ("a", "b"):
        declare(t, q)
        for i in range(3):
            t.publish(f"{q}{i}".encode(), "", q)
    got: list[Delivery] = []

    def on_delivery(delivery: Delivery) -> None:
        got.append(delivery)
        t.ack(delivery.delivery_tag)

    t.qos(1)
    for q in ("a", "b"):
        t.consume(q, on_delivery)
    drain_until(t, lambda: len(got) == 6)
    assert [d.body for d in got] == [b"a0", b"b0", b"a1", b"b1", b"a2", b"b2"]


def test_close_restores_unacked_to_the_head(make: Factory, rclient: Any, prefix: str) -> None:
    t = make()
    declare(t, "q")
    for i in range(6):
        t.publish(str(i).encode(), "q", "q")
    t.qos(4)
    got = collect(t, "q")
    drain_until(t, lambda: len(got) == 4)
    t.ack(got[1].delivery_tag)
    t.close()
    assert rclient.hlen(f"{prefix}unacked") == 0
    assert rclient.zcard(f"{prefix}unacked_index") == 0
    t2 = make()
    again = collect(t2, "q", ack=True)
    drain_until(t2, lambda: len(again) == 5)
    bodies = [d.body for d in again]
    assert sorted(bodies[:3]) == [b"0", b"2", b"3"]  # the restored ones come first
    assert bodies[3:] == [b"4", b"5"]
    assert all(d.delivery_info["redelivered"] for d in again[:3])
    assert not any(d.delivery_info["redelivered"] for d in again[3:])


def test_visibility_timeout_restores_a_dead_consumers_messages(
    make: Factory, rclient: Any, prefix: str
) -> None:
    dead = make()
    declare(dead, "q")
    for i in range(3):
        dead.publish(str(i).encode(), "q", "q")
    got = collect(dead, "q")
    drain_until(dead, lambda: len(got) == 3)
    # the consumer stops answering: it never acks nor closes
    alive = make(visibility_timeout=1, unacked_restore_interval=0.2)
    rclient.set(f"{prefix}unacked_mutex", "someone else")
    later = collect(alive, "q", ack=True)
    time.sleep(1.2)
    drain_for(alive, 0.6)
    assert later == []  # another consumer holds the restore lock
    rclient.delete(f"{prefix}unacked_mutex")
    drain_until(alive, lambda: len(later) == 3)
    assert sorted(d.body for d in later) == [b"0", b"1", b"2"]
    assert all(d.delivery_info["redelivered"] for d in later)
    assert rclient.hlen(f"{prefix}unacked") == 0
    dead.close()  # its entries are gone: nothing is restored twice
    drain_for(alive, 0.3)
    assert len(later) == 3
    assert alive.declare_queue("q", passive=True).message_count == 0


def test_get_and_passive_declare(make: Factory, rclient: Any, prefix: str) -> None:
    t = make()
    assert t.declare_queue("nothing", passive=True).message_count == 0
    declare(t, "q")
    assert t.get("q") is None
    t.publish(b"x", "q", "q", None, {"priority": 7})
    d = t.get("q")
    assert d is not None and d.body == b"x"
    assert rclient.hlen(f"{prefix}unacked") == 1
    t.reject(d.delivery_tag, requeue=True)
    assert rclient.llen(f"{prefix}q{SEP}6") == 1
    d = t.get("q", no_ack=True)
    assert d is not None and d.delivery_info["redelivered"] is True
    assert rclient.hlen(f"{prefix}unacked") == 0


def test_topic_routing_mandatory_and_fanout(make: Factory, rclient: Any, prefix: str) -> None:
    t = make()
    t.declare_exchange("topics", "topic")
    t.declare_queue("all")
    t.bind_queue("all", "topics", "events.#")
    t.declare_queue("one")
    t.bind_queue("one", "topics", "events.*.done")
    t.publish(b"1", "topics", "events.task.done")
    t.publish(b"2", "topics", "events.task.started.now")
    t.publish(b"3", "topics", "other")
    assert rclient.llen(f"{prefix}all") == 2
    assert rclient.llen(f"{prefix}one") == 1
    with pytest.raises(ChannelError) as info:
        t.publish(b"4", "topics", "other", mandatory=True)
    assert info.value.reply_code == 312
    t.unbind_queue("one", "topics", "events.*.done")
    t.publish(b"5", "topics", "events.task.done")
    assert rclient.llen(f"{prefix}one") == 1
    # fanout: pub/sub on /<db>.<exchange>
    t.declare_exchange("bcast", "fanout")
    db = parse_options(URL, {})[1].db
    sub = rclient.pubsub()
    sub.psubscribe(f"{prefix}/{db}.bcast*")
    assert sub.get_message(timeout=2)["type"] == "psubscribe"
    t.publish(b"hello", "bcast", "")
    msg = sub.get_message(timeout=2)
    sub.close()
    assert msg is not None and msg["channel"] == f"{prefix}/{db}.bcast".encode()
    assert base64.b64decode(json.loads(msg["data"])["body"]) == b"hello"


def test_purge_and_delete(make: Factory, rclient: Any, prefix: str) -> None:
    t = make()
    declare(t, "q")
    for pri in (0, 9):
        t.publish(b"x", "", "q", None, {"priority": pri})
    assert t.purge_queue("q") == 2
    t.publish(b"x", "", "q")
    assert t.delete_queue("q", if_empty=True) == 0
    assert t.delete_queue("q") == 1
    assert not rclient.exists(f"{prefix}_kombu.binding.q")
    t.publish(b"x", "q", "q")  # unbound: dropped
    assert rclient.llen(f"{prefix}q") == 0


# -- filenos -------------------------------------------------------------------------------


def test_filenos_contract(make: Factory) -> None:
    t = RedisTransport(URL)
    assert t.filenos() == ()
    t = make()
    declare(t, "q")
    got = collect(t, "q", ack=True)
    fds = t.filenos()
    assert len(fds) == 2
    # consume() left work: the first BRPOP to send
    assert readable(fds, 1.0)
    assert t.drain_events(0) == 0
    start = time.monotonic()
    assert t.drain_events(0) == 0
    assert time.monotonic() - start < 0.1
    producer = make()
    threading.Timer(0.1, lambda: [producer.publish(b"m", "", "q") for _ in range(20)]).start()
    deadline = time.monotonic() + 10
    while len(got) < 20 and time.monotonic() < deadline:
        if readable(fds, 1.0):
            t.drain_events(0)
    assert len(got) == 20
    # all dispatched: only the BRPOP timeout's empty answer, once a second, is left
    rounds = 0
    end = time.monotonic() + 1.5
    while time.monotonic() < end:
        if readable(fds, 0.1):
            assert t.drain_events(0) == 0
            rounds += 1
    assert rounds <= 4


def test_room_under_prefetch_and_wakeup_make_filenos_readable(make: Factory) -> None:
    t = make()
    declare(t, "q")
    for _ in range(3):
        t.publish(b"m", "", "q")
    t.qos(1)
    got = collect(t, "q")
    fds = t.filenos()
    drain_until(t, lambda: len(got) == 1)
    while readable(fds, 0.3):
        t.drain_events(0)
    assert len(got) == 1
    threading.Timer(0.1, t.ack, args=(got[0].delivery_tag,)).start()
    assert readable(fds, 2.0)
    drain_until(t, lambda: len(got) == 2)
    while readable(fds, 0.3):
        t.drain_events(0)
    threading.Timer(0.1, t.wakeup).start()
    assert readable(fds, 2.0)
    assert t.drain_events(0) == 0
    # a wakeup also ends a blocking drain
    threading.Timer(0.2, t.wakeup).start()
    start = time.monotonic()
    assert t.drain_events(10) == 0
    assert time.monotonic() - start < 5


# -- errors and options --------------------------------------------------------------------


def test_lost_connection_raises_connection_error_and_reconnects(
    make: Factory, rclient: Any
) -> None:
    name = f"celeriac-kill-{uuid.uuid4().hex[:6]}"
    t = make(client_name=name)
    declare(t, "q")
    got = collect(t, "q", ack=True)
    t.drain_events(0.1)
    # only this transport's connections: others share this Redis
    ids = [c["id"] for c in rclient.client_list() if c["name"] == name]
    assert ids
    for client_id in ids:
        rclient.client_kill_filter(_id=client_id)
    with pytest.raises(ConnectionError):
        for _ in range(20):
            t.drain_events(0.2)
            t.publish(b"x", "", "q")
    assert not t.connected
    assert t.filenos() == ()
    with pytest.raises(ConnectionError):
        t.consume("q", got.append)
    t.connect()
    assert len(t.filenos()) == 2
    got2 = collect(t, "q", ack=True)
    t.publish(b"after", "", "q")
    drain_until(t, lambda: b"after" in [d.body for d in got2])


def test_unreachable_broker_masks_the_password() -> None:
    t = RedisTransport("redis://user:s3cret@127.0.0.1:1/0", socket_connect_timeout=1)
    with pytest.raises(ConnectionError) as info:
        t.connect()
    assert "s3cret" not in str(info.value)
    assert "**" in str(info.value)
    assert "s3cret" not in repr(t)


def test_url_forms_and_options() -> None:
    params, config = parse_options(
        "rediss://:pw@h:6380/3?ssl_cert_reqs=CERT_NONE",
        {"visibility_timeout": 60, "priority_steps": [0, 5], "connect_timeout": 4},
    )
    assert (params["host"], params["port"], params["db"], params["password"]) == (
        "h",
        6380,
        3,
        "pw",
    )
    assert params["connection_class"] is redis.SSLConnection
    assert params["socket_connect_timeout"] == 4.0
    assert (config.visibility_timeout, config.priority_steps, config.db) == (60.0, (0, 5), 3)
    assert config.fanout_prefix == "/3."
    params, config = parse_options("redis+socket:///tmp/r.sock?virtual_host=2", {})
    assert params["path"] == "/tmp/r.sock" and params["db"] == 2
    assert params["connection_class"] is redis.UnixDomainSocketConnection
    with pytest.raises(ConfigurationError, match="visibility_timeout"):
        parse_options("redis://", {"visibility_timeout": "soon"})
    with pytest.raises(ConfigurationError, match="priority_steps"):
        parse_options("redis://", {"priority_steps": [3, 6]})
    for scheme in ("redis", "rediss", "redis+socket", "socket"):
        assert isinstance(transport_for_url(f"{scheme}://x/0"), RedisTransport)


def test_priority_steps_and_sep_options(make: Factory, rclient: Any, prefix: str) -> None:
    t = make(priority_steps=[0, 5], sep=":")
    declare(t, "q")
    t.publish(b"lo", "", "q", None, {"priority": 7})
    t.publish(b"hi", "", "q", None, {"priority": 4})
    assert rclient.llen(f"{prefix}q:5") == 1
    got = collect(t, "q", ack=True)
    drain_until(t, lambda: len(got) == 2)
    assert [d.body for d in got] == [b"hi", b"lo"]


def test_callback_that_raises_leaves_filenos_readable(make: Factory) -> None:
    t = make()
    declare(t, "q")
    t.publish(b"bad", "", "q")
    t.publish(b"good", "", "q")
    got: list[Delivery] = []

    def on_delivery(delivery: Delivery) -> None:
        got.append(delivery)
        if delivery.body == b"bad":
            raise RuntimeError("callback failed")

    t.consume("q", on_delivery)
    fds = t.filenos()
    with pytest.raises(RuntimeError):
        drain_until(t, lambda: False)
    assert readable(fds, 0.0)  # the next BRPOP is still to send
    drain_until(t, lambda: len(got) == 2)
    assert [d.body for d in got] == [b"bad", b"good"]


def test_unix_socket_url(tmp_path: Any) -> None:
    """``redis+socket://`` against a Redis of this test's own, listening on a socket only."""
    sock = tmp_path / "redis.sock"
    server = subprocess.Popen(
        [
            "redis-server",
            "--port",
            "0",
            "--unixsocket",
            str(sock),
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        url = f"redis+socket://{sock}?virtual_host=3"
        with transport_for_url(url) as t:
            declare(t, "q")
            t.publish(b"over the socket", "", "q")
            got = collect(t, "q", ack=True)
            drain_until(t, lambda: len(got) == 1)
            assert got[0].body == b"over the socket"
            assert len(t.filenos()) == 2
        check = redis.Redis(unix_socket_path=str(sock), db=3)
        assert check.smembers("_kombu.binding.q") == {f"q{SEP}{SEP}q".encode()}
        check.close()
    finally:
        server.terminate()
        server.wait(10)


def test_close_puts_back_what_was_taken_but_not_dispatched(
    make: Factory, rclient: Any, prefix: str
) -> None:
    t = make()
    declare(t, "q")
    for body in (b"a", b"b", b"c"):
        t.publish(body, "", "q")

    def on_delivery(delivery: Delivery) -> None:
        raise RuntimeError("callback failed")

    t.consume("q", on_delivery)
    with pytest.raises(RuntimeError):
        drain_until(t, lambda: False)
    assert rclient.hlen(f"{prefix}unacked") == 3  # one dispatched, two taken and waiting
    t.close()
    assert rclient.hlen(f"{prefix}unacked") == 0
    bodies = [json.loads(raw)["body"] for raw in rclient.lrange(f"{prefix}q", 0, -1)]
    assert sorted(base64.b64decode(b) for b in bodies) == [b"a", b"b", b"c"]
