"""The Redis result backend against a real Redis: Celery's keys, TTLs and PUBLISH, get() woken
by pub/sub, and the failures of reliability row 19 (unreachable, dropped subscriber, closed).

Uses db 15 of the Redis at 127.0.0.1:6379 with fresh task ids, and deletes its keys. Tests that
need a Redis of their own (TLS, unix socket, one to stop) start a private ``redis-server``.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
import traceback
import uuid
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

redis = pytest.importorskip("redis")

from celeriac import Celery, states  # noqa: E402
from celeriac.backends.redis import RedisBackend, connection_params, mask_url  # noqa: E402
from celeriac.backends.registry import backend_for_url  # noqa: E402
from celeriac.config import Settings  # noqa: E402
from celeriac.errors import (  # noqa: E402
    ConfigurationError,
    NotRegistered,
    TaskRevokedError,
    TimeoutError,
    TransportError,
)

pytestmark = pytest.mark.integration

HOST, PORT, DB = "127.0.0.1", 6379, 15
URL = f"redis://{HOST}:{PORT}/{DB}"


@pytest.fixture(scope="module")
def rclient() -> Iterator[Any]:
    client = redis.Redis(host=HOST, port=PORT, db=DB, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(
            f"Redis at {HOST}:{PORT} does not answer ({exc}); these tests need it "
            "(CI starts it; locally run `redis-server`)"
        )
    yield client
    client.close()


class Keys:
    """Task ids for one test; their keys are deleted afterwards."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.patterns: list[str] = []

    def task_id(self) -> str:
        task_id = str(uuid.uuid4())
        self.patterns.append(f"*{task_id}")
        return task_id

    def cleanup(self) -> None:
        for pattern in self.patterns:
            for key in self.client.scan_iter(match=pattern, count=1000):
                self.client.delete(key)


@pytest.fixture
def keys(rclient: Any) -> Iterator[Keys]:
    tracker = Keys(rclient)
    yield tracker
    tracker.cleanup()


@pytest.fixture
def make_app(rclient: Any) -> Iterator[Callable[..., Celery]]:
    apps: list[Celery] = []

    def make(url: str = URL, **settings: Any) -> Celery:
        app = Celery(f"t{uuid.uuid4().hex[:8]}", backend=url, set_as_current=False, **settings)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.close()


@pytest.fixture
def app(make_app: Callable[..., Celery]) -> Celery:
    return make_app()


def raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


def stored(client: Any, key: str, backend: RedisBackend) -> dict[str, Any]:
    raw = client.get(key)
    assert raw is not None, f"nothing stored at {key}"
    meta: dict[str, Any] = backend.decode(raw)
    return meta


# -- URL and settings ------------------------------------------------------------------------


def settings(**values: Any) -> Settings:
    return Settings(values)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://", {"host": "localhost", "port": 6379, "db": 0, "password": None}),
        ("redis://:s3cret@h1:6380/3", {"host": "h1", "port": 6380, "db": 3, "password": "s3cret"}),
        ("redis://bob:p%40ss@h2/2", {"host": "h2", "username": "bob", "password": "p@ss", "db": 2}),
        ("redis://h3/4?socket_timeout=2.5&health_check_interval=10", {"socket_timeout": 2.5}),
        ("redis://h3/4?health_check_interval=10", {"health_check_interval": 10}),
        ("redis://[::1]:7000/1", {"host": "::1", "port": 7000, "db": 1}),
    ],
)
def test_url_forms(url: str, expected: dict[str, Any]) -> None:
    params = connection_params(url, settings())
    for name, value in expected.items():
        assert params[name] == value, name
    assert "connection_class" not in params  # plain TCP


def test_url_rediss_verifies_by_default() -> None:
    params = connection_params("rediss://h:6380/0", settings())
    assert params["connection_class"] is redis.SSLConnection
    assert params["ssl_cert_reqs"] == ssl.CERT_REQUIRED


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("CERT_NONE", ssl.CERT_NONE),
        ("none", ssl.CERT_NONE),
        ("optional", ssl.CERT_OPTIONAL),
        ("CERT_REQUIRED", ssl.CERT_REQUIRED),
    ],
)
def test_url_rediss_cert_reqs(value: str, expected: ssl.VerifyMode) -> None:
    url = f"rediss://h/0?ssl_cert_reqs={value}&ssl_ca_certs=%2Fetc%2Fca.pem"
    params = connection_params(url, settings())
    assert params["ssl_cert_reqs"] == expected
    assert params["ssl_ca_certs"] == "/etc/ca.pem"


def test_url_socket() -> None:
    params = connection_params("redis+socket:///run/redis.sock?virtual_host=5", settings())
    assert params["connection_class"] is redis.UnixDomainSocketConnection
    assert params["path"] == "/run/redis.sock"
    assert params["db"] == 5
    assert "host" not in params and "port" not in params


def test_settings_give_timeouts_and_tls() -> None:
    conf = settings(
        redis_socket_timeout=3,
        redis_socket_connect_timeout=1.5,
        redis_retry_on_timeout=True,
        redis_backend_health_check_interval=25,
        redis_backend_use_ssl={"ssl_cert_reqs": ssl.CERT_NONE},
    )
    params = connection_params("redis://h/1", conf)
    assert params["socket_timeout"] == 3.0
    assert params["socket_connect_timeout"] == 1.5
    assert params["retry_on_timeout"] is True
    assert params["health_check_interval"] == 25
    assert params["connection_class"] is redis.SSLConnection
    assert params["ssl_cert_reqs"] == ssl.CERT_NONE


def test_celery_default_timeouts() -> None:
    params = connection_params("redis://h/1", settings())
    assert params["socket_timeout"] == 120.0
    assert params["socket_connect_timeout"] is None
    assert params["retry_on_timeout"] is False


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://h/0?ssl_cert_reqs=required", "use the rediss:// scheme"),
        ("redis://h/db", "invalid database 'db'"),
        ("redis://h:port/0", "invalid port"),
        ("rediss://h/0?ssl_cert_reqs=sometimes", "invalid ssl_cert_reqs"),
        ("redis://h/0?socket_timeout=soon", "invalid value 'soon' for socket_timeout"),
        ("http://h/0", "not a redis result backend URL"),
    ],
)
def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        connection_params(url, settings())


def test_unknown_query_option_fails_at_configuration() -> None:
    app = Celery("t", backend="redis://h/0?no_such_option=1", set_as_current=False)
    with pytest.raises(ConfigurationError, match="no_such_option"):
        _ = app.backend


def test_mask_url() -> None:
    assert mask_url("redis://:s3cret@h:1/0") == "redis://:**@h:1/0"
    assert mask_url("rediss://bob:s3cret@h/0?x=1") == "rediss://bob:**@h/0?x=1"
    assert mask_url("redis://h/0") == "redis://h/0"


@pytest.mark.parametrize("scheme", ["redis://h/0", "rediss://h/0", "redis+socket:///tmp/r.sock"])
def test_registry_schemes(scheme: str) -> None:
    app = Celery("t", set_as_current=False)
    backend = backend_for_url(app, scheme)
    assert isinstance(backend, RedisBackend)
    backend.close()


# -- keys, values, TTL, PUBLISH ---------------------------------------------------------------


def test_every_state_round_trips(app: Celery, keys: Keys, rclient: Any) -> None:
    backend = app.backend
    assert isinstance(backend, RedisBackend)
    cases: list[tuple[str, Callable[[str], Any]]] = [
        (states.STARTED, lambda t: backend.mark_as_started(t, pid=4242, hostname="w1@host")),
        (states.SUCCESS, lambda t: backend.mark_as_done(t, {"a": [1, 2.5, "x", None]})),
        (states.FAILURE, lambda t: backend.mark_as_failure(t, raised(ValueError("boom", 42)))),
        (states.RETRY, lambda t: backend.mark_as_retry(t, KeyError("again"), "Traceback…\n")),
        (states.REVOKED, lambda t: backend.mark_as_revoked(t, "terminated")),
        ("PROGRESS", lambda t: backend.store_result(t, {"done": 3}, "PROGRESS")),
    ]
    metas: dict[str, dict[str, Any]] = {}
    for state, write in cases:
        task_id = keys.task_id()
        write(task_id)
        meta = metas[state] = stored(rclient, f"celery-task-meta-{task_id}", backend)
        assert list(meta) == ["status", "result", "traceback", "children", "date_done", "task_id"]
        assert meta["status"] == state
        assert meta["task_id"] == task_id
        assert (meta["date_done"] is not None) == (state in states.READY_STATES)
        assert backend.get_task_meta(task_id) == meta
    failure = metas[states.FAILURE]
    assert failure["result"] == {
        "exc_type": "ValueError",
        "exc_message": ["boom", 42],
        "exc_module": "builtins",
    }
    assert failure["traceback"].startswith("Traceback (most recent call last):")
    assert failure["traceback"].endswith("ValueError: ('boom', 42)\n")
    assert metas[states.STARTED]["result"] == {"pid": 4242, "hostname": "w1@host"}
    assert metas[states.REVOKED]["result"]["exc_module"] == "celery.exceptions"
    assert metas[states.RETRY]["result"]["exc_message"] == ["again"]


def test_failure_read_back_as_exceptions(app: Celery, keys: Keys) -> None:
    for exc, cls in [
        (ValueError("boom", 42), ValueError),
        (NotRegistered("proj.nope"), NotRegistered),
        (TaskRevokedError("revoked"), TaskRevokedError),
    ]:
        task_id = keys.task_id()
        app.backend.mark_as_failure(task_id, raised(exc))
        with pytest.raises(cls) as info:
            app.AsyncResult(task_id).get(timeout=5)
        assert info.value.args == exc.args


@pytest.mark.parametrize(
    ("settings_", "state", "low", "high"),
    [
        ({}, states.SUCCESS, 86390, 86400),
        ({"result_expires": 100}, states.SUCCESS, 95, 100),
        ({"result_expires": 100, "result_failure_expires": 30}, states.FAILURE, 25, 30),
        ({"result_expires": 100, "result_failure_expires": 30}, states.SUCCESS, 95, 100),
        ({"result_expires": None}, states.SUCCESS, -1, -1),
        ({"result_expires": 0}, states.SUCCESS, -1, -1),
    ],
)
def test_ttl_as_celery(
    make_app: Callable[..., Celery],
    keys: Keys,
    rclient: Any,
    settings_: dict[str, Any],
    state: str,
    low: int,
    high: int,
) -> None:
    app = make_app(**settings_)
    task_id = keys.task_id()
    app.backend.store_result(task_id, 1 if state == states.SUCCESS else ValueError("x"), state)
    assert low <= rclient.ttl(f"celery-task-meta-{task_id}") <= high


@pytest.mark.parametrize(
    ("prefix", "key_prefix"),
    [("p", "p_"), ("p:", "p:"), ("p-", "p-"), ("p.", "p."), ("p_", "p_")],
)
def test_global_keyprefix(
    make_app: Callable[..., Celery], keys: Keys, rclient: Any, prefix: str, key_prefix: str
) -> None:
    app = make_app(result_backend_transport_options={"global_keyprefix": prefix})
    task_id = keys.task_id()
    app.backend.mark_as_done(task_id, 7)
    assert rclient.exists(f"{key_prefix}celery-task-meta-{task_id}")
    assert not rclient.exists(f"celery-task-meta-{task_id}")
    assert app.AsyncResult(task_id).get(timeout=5) == 7


def test_publish_carries_the_stored_bytes(app: Celery, keys: Keys, rclient: Any) -> None:
    task_id = keys.task_id()
    key = f"celery-task-meta-{task_id}"
    pubsub = rclient.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(key)
    try:
        app.backend.mark_as_started(task_id, pid=1, hostname="h")
        app.backend.mark_as_done(task_id, [1, 2])
        messages = []
        deadline = time.monotonic() + 5
        while len(messages) < 2 and time.monotonic() < deadline:
            message = pubsub.get_message(timeout=0.5)
            if message is not None:
                messages.append(message)
    finally:
        pubsub.close()
    assert [m["channel"] for m in messages] == [key.encode()] * 2
    assert messages[-1]["data"] == rclient.get(key)
    assert app.backend.decode(messages[0]["data"])["status"] == states.STARTED


def test_success_is_never_overwritten(app: Celery, keys: Keys, rclient: Any) -> None:
    task_id = keys.task_id()
    app.backend.mark_as_done(task_id, "first")
    app.backend.mark_as_failure(task_id, ValueError("late duplicate"))
    app.backend.mark_as_started(task_id, pid=1, hostname="h")
    assert app.backend.get_task_meta(task_id)["result"] == "first"
    assert app.backend.get_task_meta(task_id)["status"] == states.SUCCESS


def test_success_kept_with_watch_path(make_app: Callable[..., Celery], keys: Keys) -> None:
    app = make_app(result_serializer="pickle", result_accept_content=["pickle", "json"])
    backend = app.backend
    assert isinstance(backend, RedisBackend) and backend._store_script is None
    task_id = keys.task_id()
    backend.mark_as_started(task_id, pid=1, hostname="h")
    backend.mark_as_done(task_id, {"x": 1})
    backend.mark_as_failure(task_id, ValueError("late"))
    assert app.AsyncResult(task_id).get(timeout=5) == {"x": 1}


def test_success_kept_when_lua_cannot_decode(app: Celery, keys: Keys, rclient: Any) -> None:
    # a Celery 5.7 writer with result_compression: Lua cannot inflate it, WATCH decides
    task_id = keys.task_id()
    key = f"celery-task-meta-{task_id}"
    body = app.backend.encode(app.backend.meta_for(task_id, states.SUCCESS, 5))
    rclient.set(key, b"\x00celery-compressed\x00application/x-gzip\x00" + zlib.compress(body))
    app.backend.mark_as_failure(task_id, ValueError("late"))
    assert app.AsyncResult(task_id).get(timeout=5) == 5


def test_store_script_refused_falls_back_to_watch(
    app: Celery, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = app.backend
    assert isinstance(backend, RedisBackend)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise redis.ResponseError("NOPERM this user has no permissions to run 'evalsha'")

    monkeypatch.setattr(backend, "_store_script", refuse)
    task_id = keys.task_id()
    backend.mark_as_done(task_id, 1)
    assert backend._store_script is None
    backend.mark_as_failure(task_id, ValueError("late"))
    assert app.AsyncResult(task_id).get(timeout=5) == 1


def test_forget(app: Celery, keys: Keys, rclient: Any) -> None:
    task_id = keys.task_id()
    app.backend.mark_as_done(task_id, 1)
    result = app.AsyncResult(task_id)
    assert result.get(timeout=5) == 1
    result.forget()
    assert not rclient.exists(f"celery-task-meta-{task_id}")
    assert result.state == states.PENDING


def test_reads_celery_compressed_results(app: Celery, keys: Keys, rclient: Any) -> None:
    task_id = keys.task_id()
    body = app.backend.encode(app.backend.meta_for(task_id, states.SUCCESS, [1, "two"]))
    rclient.set(
        f"celery-task-meta-{task_id}",
        b"\x00celery-compressed\x00application/x-gzip\x00" + zlib.compress(body),
    )
    assert app.AsyncResult(task_id).get(timeout=5) == [1, "two"]


# -- get(): woken by pub/sub ------------------------------------------------------------------


class CountingGets:
    def __init__(self, backend: RedisBackend, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        original = backend._get

        def counted(key: str) -> bytes | None:
            self.count += 1
            return original(key)

        monkeypatch.setattr(backend, "_get", counted)


def store_later(delay: float, store: Callable[[], Any]) -> tuple[threading.Thread, list[float]]:
    stamps: list[float] = []

    def run() -> None:
        time.sleep(delay)
        stamps.append(time.monotonic())
        store()
        stamps.append(time.monotonic())

    thread = threading.Thread(target=run)
    thread.start()
    return thread, stamps


def test_get_wakes_on_publish_without_polling(
    app: Celery, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = app.backend
    assert isinstance(backend, RedisBackend)
    gets = CountingGets(backend, monkeypatch)
    task_id = keys.task_id()
    thread, stamps = store_later(0.5, lambda: backend.mark_as_done(task_id, "late"))
    value = app.AsyncResult(task_id).get(timeout=10)
    returned = time.monotonic()
    thread.join()
    assert value == "late"
    assert returned - stamps[0] < 0.05, f"get returned {returned - stamps[0]:.3f}s after store"
    assert gets.count == 1  # the read after subscribing; then only pub/sub


def test_get_sees_non_ready_states_then_ready(app: Celery, keys: Keys) -> None:
    backend = app.backend
    task_id = keys.task_id()

    def progress() -> None:
        backend.mark_as_started(task_id, pid=1, hostname="h")
        backend.store_result(task_id, {"n": 1}, "PROGRESS")
        backend.mark_as_done(task_id, "done")

    thread, _ = store_later(0.2, progress)
    assert app.AsyncResult(task_id).get(timeout=10) == "done"
    thread.join()


def test_get_sees_result_stored_before(app: Celery, keys: Keys) -> None:
    task_id = keys.task_id()
    app.backend.mark_as_done(task_id, {"ready": True})
    started = time.monotonic()
    assert app.AsyncResult(task_id).get(timeout=10) == {"ready": True}
    assert time.monotonic() - started < 0.5


def test_get_timeout(app: Celery, keys: Keys) -> None:
    task_id = keys.task_id()
    app.backend.mark_as_started(task_id, pid=1, hostname="h")
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=f"waiting for task {task_id}"):
        app.AsyncResult(task_id).get(timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 1.5


def test_get_timeout_zero_reads_once(app: Celery, keys: Keys) -> None:
    task_id = keys.task_id()
    with pytest.raises(TimeoutError):
        app.AsyncResult(task_id).get(timeout=0)
    app.backend.mark_as_done(task_id, 3)
    assert app.AsyncResult(task_id).get(timeout=0) == 3


def test_many_waiters_share_one_subscriber(
    make_app: Callable[..., Celery], keys: Keys, rclient: Any
) -> None:
    name = f"celeriac-test-{uuid.uuid4().hex[:8]}"
    app = make_app(f"{URL}?client_name={name}")
    backend = app.backend
    ids = [keys.task_id() for _ in range(12)]
    results: dict[tuple[str, int], Any] = {}
    errors: list[BaseException] = []

    def wait(task_id: str, n: int) -> None:
        try:
            results[task_id, n] = app.AsyncResult(task_id).get(timeout=10)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=wait, args=(t, n)) for t in ids for n in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    subscribers = [c for c in rclient.client_list(_type="pubsub") if c.get("name") == name]
    assert len(subscribers) == 1
    for i, task_id in enumerate(ids):
        backend.mark_as_done(task_id, i)
    for thread in threads:
        thread.join(10)
    assert not errors
    assert results == {(t, n): i for i, t in enumerate(ids) for n in range(3)}


def test_get_after_fork(app: Celery, keys: Keys) -> None:
    first, second = keys.task_id(), keys.task_id()
    app.backend.mark_as_done(first, 1)
    assert app.AsyncResult(first).get(timeout=5) == 1  # the parent's subscriber exists
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            thread, _ = store_later(0.1, lambda: app.backend.mark_as_done(second, 2))
            code = 0 if app.AsyncResult(second).get(timeout=5) == 2 else 2
            thread.join()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    third = keys.task_id()
    thread, _ = store_later(0.1, lambda: app.backend.mark_as_done(third, 3))
    assert app.AsyncResult(third).get(timeout=5) == 3  # the parent's still works
    thread.join()


# -- failures (reliability row 19) ------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_unreachable_errors_mask_the_password(make_app: Callable[..., Celery]) -> None:
    port = closed_port()
    app = make_app(f"redis://:s3cret@127.0.0.1:{port}/0")
    backend = app.backend
    assert "s3cret" not in repr(backend)
    task_id = str(uuid.uuid4())
    for operation, call in [
        ("store the result", lambda: backend.mark_as_done(task_id, 1)),
        ("read", lambda: backend.get_task_meta(task_id)),
        ("subscribe", lambda: app.AsyncResult(task_id).get(timeout=1)),
        ("delete", lambda: backend.forget(task_id)),
    ]:
        with pytest.raises(TransportError) as info:
            call()
        message = str(info.value)
        assert operation in message
        assert f"redis://:**@127.0.0.1:{port}/0" in message
        assert "s3cret" not in message
        assert "s3cret" not in "".join(traceback.format_exception(info.value))


def test_store_retries_with_always_retry(
    make_app: Callable[..., Celery], keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(
        result_backend_always_retry=True,
        result_backend_max_retries=5,
        result_backend_base_sleep_between_retries_ms=1,
    )
    backend = app.backend
    assert isinstance(backend, RedisBackend)
    original = backend._write
    calls: list[str] = []

    def flaky(key: str, value: bytes, ttl: int) -> None:
        calls.append(key)
        if len(calls) < 3:
            raise redis.ConnectionError("Connection reset by peer")
        original(key, value, ttl)

    monkeypatch.setattr(backend, "_write", flaky)
    task_id = keys.task_id()
    backend.mark_as_done(task_id, "kept")
    assert len(calls) == 3
    assert app.AsyncResult(task_id).get(timeout=5) == "kept"


def test_store_gives_up_after_max_retries(make_app: Callable[..., Celery]) -> None:
    app = make_app(
        f"redis://127.0.0.1:{closed_port()}/0",
        result_backend_always_retry=True,
        result_backend_max_retries=3,
        result_backend_base_sleep_between_retries_ms=1,
    )
    with pytest.raises(TransportError, match=r"unreachable \(after 3 retries\)"):
        app.backend.mark_as_done(str(uuid.uuid4()), 1)


def test_store_raises_at_once_without_always_retry(
    app: Celery, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = app.backend
    calls: list[str] = []

    def broken(key: str, value: bytes, ttl: int) -> None:
        calls.append(key)
        raise redis.ConnectionError("Connection reset by peer")

    monkeypatch.setattr(backend, "_write", broken)
    with pytest.raises(TransportError, match="Connection reset by peer"):
        backend.mark_as_done(str(uuid.uuid4()), 1)
    assert len(calls) == 1


def kill_subscriber(rclient: Any, name: str) -> None:
    ids = [c["id"] for c in rclient.client_list(_type="pubsub") if c.get("name") == name]
    assert ids, "no subscriber connection to kill"
    for client_id in ids:
        rclient.client_kill_filter(_id=client_id)


def test_get_survives_a_dropped_subscriber(
    make_app: Callable[..., Celery], keys: Keys, rclient: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="celeriac.backends.redis")
    name = f"celeriac-test-{uuid.uuid4().hex[:8]}"
    app = make_app(f"{URL}?client_name={name}")
    backend = app.backend
    task_id = keys.task_id()
    outcome: list[Any] = []
    waiter = threading.Thread(target=lambda: outcome.append(app.AsyncResult(task_id).get(10)))
    waiter.start()
    time.sleep(0.3)
    kill_subscriber(rclient, name)
    backend.mark_as_done(task_id, "after the drop")  # published while nobody listens
    waiter.join(10)
    assert outcome == ["after the drop"]
    assert "re-subscribed to redis result backend" in caplog.text
    # and the consumer keeps working on the new connection, also when it dies while idle
    for _ in range(2):
        other = keys.task_id()
        thread, _ = store_later(0.2, lambda other=other: backend.mark_as_done(other, 2))
        assert app.AsyncResult(other).get(timeout=5) == 2
        thread.join()
        kill_subscriber(rclient, name)


def test_waiting_subscriber_pings(
    make_app: Callable[..., Celery], keys: Keys, rclient: Any
) -> None:
    name = f"celeriac-test-{uuid.uuid4().hex[:8]}"
    app = make_app(f"{URL}?client_name={name}", redis_backend_health_check_interval=0.2)
    task_id = keys.task_id()
    outcome: list[Any] = []
    waiter = threading.Thread(target=lambda: outcome.append(app.AsyncResult(task_id).get(5)))
    waiter.start()
    time.sleep(0.7)
    commands = [c["cmd"] for c in rclient.client_list(_type="pubsub") if c.get("name") == name]
    app.backend.mark_as_done(task_id, "pinged")
    waiter.join(5)
    assert commands == ["ping"]
    assert outcome == ["pinged"]


def test_unanswered_ping_means_a_dead_subscriber(
    make_app: Callable[..., Celery],
    keys: Keys,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="celeriac.backends.redis")
    app = make_app(redis_backend_health_check_interval=0.2)
    backend = app.backend
    assert isinstance(backend, RedisBackend)
    consumer = backend._results()
    dispatch = consumer._dispatch

    def deaf(reply: Any) -> None:  # a half-open connection: the PONG never comes back
        if isinstance(reply, list) and reply[0] in (b"subscribe", b"message"):
            dispatch(reply)

    monkeypatch.setattr(consumer, "_dispatch", deaf)
    task_id = keys.task_id()
    thread, _ = store_later(1.0, lambda: backend.mark_as_done(task_id, "resynced"))
    assert app.AsyncResult(task_id).get(timeout=5) == "resynced"
    thread.join()
    assert "no reply to PING" in caplog.text
    assert "re-subscribed" in caplog.text


def test_close_releases_subscriber_and_wakes_waiters(
    make_app: Callable[..., Celery], keys: Keys, rclient: Any
) -> None:
    name = f"celeriac-test-{uuid.uuid4().hex[:8]}"
    app = make_app(f"{URL}?client_name={name}")
    backend = app.backend
    task_id = keys.task_id()
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            app.AsyncResult(task_id).get(timeout=10)
        except BaseException as exc:
            errors.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.3)
    backend.close()
    waiter.join(5)
    assert not waiter.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], TransportError)
    assert "closed" in str(errors[0])
    time.sleep(0.1)
    assert not [c for c in rclient.client_list() if c.get("name") == name]
    # usable again after close: a new pool and subscriber on demand
    thread, _ = store_later(0.1, lambda: backend.mark_as_done(task_id, "again"))
    assert app.AsyncResult(task_id).get(timeout=5) == "again"
    thread.join()


# -- private redis-server: stopped under a waiter, unix socket, TLS ---------------------------


class PrivateRedis:
    def __init__(self, tmp_path: Path, *args: str, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        self.port = closed_port() if port is None else port
        self.process = subprocess.Popen(
            [
                binary,
                *("--port", str(self.port), "--save", "", "--appendonly", "no"),
                *("--dir", str(tmp_path), *args),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def wait_port(self, port: int) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"private redis-server did not listen on {port}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[Callable[..., PrivateRedis]]:
    servers: list[PrivateRedis] = []

    def start(*args: str, port: int | None = None) -> PrivateRedis:
        server = PrivateRedis(tmp_path, *args, port=port)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def test_get_fails_cleanly_when_redis_goes_away(
    make_app: Callable[..., Celery], private_redis: Callable[..., PrivateRedis]
) -> None:
    server = private_redis()
    server.wait_port(server.port)
    app = make_app(f"redis://127.0.0.1:{server.port}/0")
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            app.AsyncResult(str(uuid.uuid4())).get(timeout=30)
        except BaseException as exc:
            errors.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.3)
    started = time.monotonic()
    server.stop()
    waiter.join(10)
    assert not waiter.is_alive()
    assert time.monotonic() - started < 5
    assert len(errors) == 1 and isinstance(errors[0], TransportError), errors
    assert "lost the subscriber connection" in str(errors[0])


def test_get_rides_out_a_restart_with_always_retry(
    make_app: Callable[..., Celery], private_redis: Callable[..., PrivateRedis]
) -> None:
    server = private_redis()
    server.wait_port(server.port)
    app = make_app(
        f"redis://127.0.0.1:{server.port}/0",
        result_backend_always_retry=True,
        result_backend_max_retries=50,
        result_backend_base_sleep_between_retries_ms=20,
        result_backend_max_sleep_between_retries_ms=200,
    )
    task_id = str(uuid.uuid4())
    outcome: list[Any] = []
    waiter = threading.Thread(target=lambda: outcome.append(app.AsyncResult(task_id).get(20)))
    waiter.start()
    time.sleep(0.3)
    server.stop()
    time.sleep(0.5)
    restarted = private_redis(port=server.port)
    restarted.wait_port(server.port)
    app.backend.mark_as_done(task_id, "survived")
    waiter.join(20)
    assert outcome == ["survived"]


def test_unix_socket(
    make_app: Callable[..., Celery], private_redis: Callable[..., PrivateRedis], tmp_path: Path
) -> None:
    path = tmp_path / "redis.sock"
    server = private_redis("--unixsocket", str(path), "--unixsocketperm", "700")
    server.wait_port(server.port)
    app = make_app(f"redis+socket://{path}?virtual_host=3")
    task_id = str(uuid.uuid4())
    thread, _ = store_later(0.1, lambda: app.backend.mark_as_done(task_id, "via socket"))
    assert app.AsyncResult(task_id).get(timeout=5) == "via socket"
    thread.join()
    assert redis.Redis(unix_socket_path=str(path), db=3).exists(f"celery-task-meta-{task_id}")


@pytest.fixture
def tls_redis(tmp_path: Path, private_redis: Callable[..., PrivateRedis]) -> tuple[int, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            openssl,
            *("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    tls_port = closed_port()
    server = private_redis(
        "--tls-port",
        str(tls_port),
        "--tls-cert-file",
        str(cert),
        "--tls-key-file",
        str(key),
        "--tls-ca-cert-file",
        str(cert),
        "--tls-auth-clients",
        "no",
    )
    server.wait_port(tls_port)
    return tls_port, cert


def test_tls_verifies_by_default(make_app: Callable[..., Celery], tls_redis: Any) -> None:
    port, _ = tls_redis
    app = make_app(f"rediss://127.0.0.1:{port}/0")
    with pytest.raises(TransportError, match="certificate verify failed"):
        app.backend.mark_as_done(str(uuid.uuid4()), 1)


@pytest.mark.parametrize("query", ["ssl_ca_certs={cert}", "ssl_cert_reqs=CERT_NONE"])
def test_tls_round_trip(make_app: Callable[..., Celery], tls_redis: Any, query: str) -> None:
    port, cert = tls_redis
    app = make_app(f"rediss://127.0.0.1:{port}/0?" + query.format(cert=cert))
    task_id = str(uuid.uuid4())
    thread, _ = store_later(0.1, lambda: app.backend.mark_as_done(task_id, "over tls"))
    assert app.AsyncResult(task_id).get(timeout=5) == "over tls"
    thread.join()
    for n in range(20):  # several messages in flight: TLS buffers what poll() cannot see
        other = str(uuid.uuid4())
        thread, _ = store_later(0, lambda other=other, n=n: app.backend.mark_as_done(other, n))
        assert app.AsyncResult(other).get(timeout=5) == n
        thread.join()
