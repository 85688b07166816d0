"""Our Redis result backend and Celery's own ``celery.backends.redis.RedisBackend`` on the same
Redis: each reads what the other writes (values, states, exception types, tracebacks), and each
one's ``get()`` is woken by the other's PUBLISH.

Uses db 15 of the Redis at 127.0.0.1:6379 with fresh task ids, and deletes its keys.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

celery = pytest.importorskip("celery")
redis = pytest.importorskip("redis")

import billiard.exceptions  # noqa: E402
from celery import exceptions as celery_exc  # noqa: E402
from celery.result import AsyncResult as CeleryAsyncResult  # noqa: E402

import celeriac  # noqa: E402
from celeriac import errors, states  # noqa: E402

pytestmark = [
    pytest.mark.integration,
    # Celery's own writer still calls redis-py's setex(), deprecated since redis-py 6
    pytest.mark.filterwarnings("ignore:Call to deprecated setex:DeprecationWarning"),
]

URL = "redis://127.0.0.1:6379/15"
PREFIX_OPTIONS = {"global_keyprefix": "compat"}


@pytest.fixture(scope="module")
def rclient() -> Iterator[Any]:
    client = redis.Redis.from_url(URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(
            f"Redis at {URL} does not answer ({exc}); CI starts it, locally run redis-server"
        )
    yield client
    client.close()


def make_celery(**conf: Any) -> Any:
    app = celery.Celery(f"compat{uuid.uuid4().hex[:6]}", backend=URL, set_as_current=False)
    app.conf.update(result_accept_content=["json"], **conf)
    return app


def close_celery(app: Any) -> None:
    app.backend.result_consumer.stop()
    app.backend.client.connection_pool.disconnect()


@pytest.fixture(scope="module")
def capp(rclient: Any) -> Iterator[Any]:
    app = make_celery()
    yield app
    close_celery(app)


@pytest.fixture(scope="module")
def ours(rclient: Any) -> Iterator[celeriac.Celery]:
    app = celeriac.Celery("compat-ours", backend=URL, set_as_current=False)
    yield app
    app.close()


@pytest.fixture
def task_id(rclient: Any) -> Iterator[str]:
    value = str(uuid.uuid4())
    yield value
    for key in rclient.scan_iter(match=f"*{value}"):
        rclient.delete(key)


def raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


def later(delay: float, action: Callable[[], Any]) -> threading.Thread:
    def run() -> None:
        time.sleep(delay)
        action()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


VALUES = [0, 42, -1.5, "text", "ünïcode", None, True, [1, [2, "x"]], {"a": {"b": [None, 1.0]}}]


# -- celeriac writes, Celery reads -----------------------------------------------------------


@pytest.mark.parametrize("value", VALUES)
def test_celery_reads_our_success(ours: Any, capp: Any, task_id: str, value: Any) -> None:
    ours.backend.mark_as_done(task_id, value)
    result = CeleryAsyncResult(task_id, app=capp)
    assert result.get(timeout=5) == value
    assert result.state == "SUCCESS"
    assert result.date_done is not None


@pytest.mark.parametrize(
    ("exc", "celery_type"),
    [
        (ValueError("boom", 42), ValueError),
        (KeyError("k"), KeyError),
        (errors.NotRegistered("proj.nope"), celery_exc.NotRegistered),
        (errors.TaskRevokedError("revoked"), celery_exc.TaskRevokedError),
        (errors.TimeLimitExceeded(30.0), billiard.exceptions.TimeLimitExceeded),
        (errors.SoftTimeLimitExceeded(), billiard.exceptions.SoftTimeLimitExceeded),
        (errors.WorkerLostError("lost"), billiard.exceptions.WorkerLostError),
    ],
)
def test_celery_reads_our_failure(
    ours: Any, capp: Any, task_id: str, exc: BaseException, celery_type: type
) -> None:
    exc = raised(exc)
    meta = ours.backend.mark_as_failure(task_id, exc)
    result = CeleryAsyncResult(task_id, app=capp)
    with pytest.raises(celery_type) as info:
        result.get(timeout=5)
    assert type(info.value) is celery_type
    assert info.value.args == exc.args
    assert result.state == "FAILURE"
    assert result.traceback == meta["traceback"]
    assert result.traceback.startswith("Traceback (most recent call last):")


def test_celery_reads_our_other_states(ours: Any, capp: Any, rclient: Any) -> None:
    ids = [str(uuid.uuid4()) for _ in range(4)]
    try:
        ours.backend.mark_as_started(ids[0], pid=77, hostname="w1@host")
        ours.backend.mark_as_retry(ids[1], raised(KeyError("again")), "Traceback…\n")
        ours.backend.mark_as_revoked(ids[2], "terminated")
        ours.backend.store_result(ids[3], {"step": 2}, "PROGRESS")
        started, retry, revoked, custom = (CeleryAsyncResult(i, app=capp) for i in ids)
        assert started.state == "STARTED"
        assert started.info == {"pid": 77, "hostname": "w1@host"}
        assert retry.state == "RETRY"
        assert isinstance(retry.info, KeyError) and retry.info.args == ("again",)
        assert retry.traceback == "Traceback…\n"
        assert revoked.state == "REVOKED"
        with pytest.raises(celery_exc.TaskRevokedError, match="terminated"):
            revoked.get(timeout=5)
        assert custom.state == "PROGRESS" and custom.info == {"step": 2}
    finally:
        rclient.delete(*(f"celery-task-meta-{i}" for i in ids))


def test_celery_waiting_is_woken_by_our_publish(ours: Any, capp: Any, task_id: str) -> None:
    stamps: list[float] = []
    thread = later(
        0.3, lambda: (stamps.append(time.monotonic()), ours.backend.mark_as_done(task_id, "pub"))
    )
    assert CeleryAsyncResult(task_id, app=capp).get(timeout=10, interval=5) == "pub"
    returned = time.monotonic()
    thread.join()
    # interval=5: Celery would only see it this soon through our PUBLISH (with task_id in it)
    assert returned - stamps[0] < 1.0


def test_our_meta_has_celerys_shape(ours: Any, capp: Any, rclient: Any) -> None:
    ours_id, theirs_id = str(uuid.uuid4()), str(uuid.uuid4())
    try:
        ours.backend.mark_as_failure(ours_id, raised(ValueError("x", 1)))
        capp.backend.mark_as_failure(theirs_id, raised(ValueError("x", 1)))
        mine = ours.backend.decode(rclient.get(f"celery-task-meta-{ours_id}"))
        theirs = capp.backend.decode(rclient.get(f"celery-task-meta-{theirs_id}"))
        assert list(mine) == list(theirs)
        assert mine["result"] == theirs["result"]
        ttl_mine = rclient.ttl(f"celery-task-meta-{ours_id}")
        ttl_theirs = rclient.ttl(f"celery-task-meta-{theirs_id}")
        assert abs(ttl_mine - ttl_theirs) <= 2
    finally:
        rclient.delete(f"celery-task-meta-{ours_id}", f"celery-task-meta-{theirs_id}")


def test_global_keyprefix_agrees(rclient: Any, task_id: str) -> None:
    capp = make_celery(result_backend_transport_options=PREFIX_OPTIONS)
    ours = celeriac.Celery(
        "p", backend=URL, set_as_current=False, result_backend_transport_options=PREFIX_OPTIONS
    )
    try:
        ours.backend.mark_as_done(task_id, "prefixed")
        assert rclient.exists(f"compat_celery-task-meta-{task_id}")
        assert CeleryAsyncResult(task_id, app=capp).get(timeout=5) == "prefixed"
        capp.backend.mark_as_done(task_id + "-c", "theirs")
        assert ours.AsyncResult(task_id + "-c").get(timeout=5) == "theirs"
    finally:
        rclient.delete(f"compat_celery-task-meta-{task_id}-c")
        ours.close()
        close_celery(capp)


def test_neither_overwrites_the_others_success(ours: Any, capp: Any, task_id: str) -> None:
    capp.backend.mark_as_done(task_id, "celery first")
    ours.backend.mark_as_failure(task_id, ValueError("late duplicate"))
    assert CeleryAsyncResult(task_id, app=capp).get(timeout=5) == "celery first"
    other = task_id + "-2"
    ours.backend.mark_as_done(other, "ours first")
    capp.backend.mark_as_failure(other, ValueError("late duplicate"))
    assert ours.AsyncResult(other).get(timeout=5) == "ours first"
    ours.backend.forget(other)


# -- Celery writes, celeriac reads -----------------------------------------------------------


@pytest.mark.parametrize("value", VALUES)
def test_we_read_celerys_success(ours: Any, capp: Any, task_id: str, value: Any) -> None:
    capp.backend.mark_as_done(task_id, value)
    result = ours.AsyncResult(task_id)
    assert result.get(timeout=5) == value
    assert result.state == states.SUCCESS


def test_we_read_celerys_store_result(ours: Any, capp: Any, task_id: str) -> None:
    capp.backend.store_result(task_id, {"n": 1}, "PROGRESS")
    assert ours.AsyncResult(task_id).state == "PROGRESS"
    assert ours.AsyncResult(task_id).info == {"n": 1}
    capp.backend.store_result(task_id, [3], "SUCCESS")
    assert ours.AsyncResult(task_id).get(timeout=5) == [3]


@pytest.mark.parametrize(
    ("exc", "our_type"),
    [
        (ValueError("boom", 42), ValueError),
        (celery_exc.NotRegistered("proj.nope"), errors.NotRegistered),
        (celery_exc.TaskRevokedError("expired"), errors.TaskRevokedError),
        (billiard.exceptions.TimeLimitExceeded(30.0), errors.TimeLimitExceeded),
        (billiard.exceptions.WorkerLostError("lost"), errors.WorkerLostError),
    ],
)
def test_we_read_celerys_failure(
    ours: Any, capp: Any, task_id: str, exc: BaseException, our_type: type
) -> None:
    exc = raised(exc)
    capp.backend.mark_as_failure(task_id, exc, traceback="Traceback (most recent call last):\n")
    result = ours.AsyncResult(task_id)
    with pytest.raises(our_type) as info:
        result.get(timeout=5)
    assert type(info.value) is our_type
    assert info.value.args == exc.args
    assert result.state == states.FAILURE
    assert result.traceback == "Traceback (most recent call last):\n"


def test_we_read_celerys_revoked_and_retry(ours: Any, capp: Any, task_id: str) -> None:
    capp.backend.mark_as_retry(task_id, raised(KeyError("again")), "tb\n")
    result = ours.AsyncResult(task_id)
    assert result.state == states.RETRY
    assert isinstance(result.info, KeyError)
    capp.backend.mark_as_revoked(task_id, "revoked")
    with pytest.raises(errors.TaskRevokedError, match="revoked"):
        ours.AsyncResult(task_id).get(timeout=5)


def test_our_get_is_woken_by_celerys_publish(ours: Any, capp: Any, task_id: str) -> None:
    stamps: list[float] = []

    def store() -> None:
        capp.backend.mark_as_started(task_id)
        stamps.append(time.monotonic())
        capp.backend.mark_as_done(task_id, "from celery")

    thread = later(0.3, store)
    assert ours.AsyncResult(task_id).get(timeout=10) == "from celery"
    returned = time.monotonic()
    thread.join()
    assert returned - stamps[0] < 0.05


def test_we_read_celerys_extended_and_compressed_results(ours: Any, task_id: str) -> None:
    capp = make_celery(result_extended=True, result_compression="gzip")
    try:
        capp.backend.mark_as_done(task_id, {"big": "x" * 1000})
        assert ours.AsyncResult(task_id).get(timeout=5) == {"big": "x" * 1000}
        other = task_id + "-2"
        capp.backend.mark_as_failure(other, raised(ValueError("zipped")))
        with pytest.raises(ValueError, match="zipped"):
            ours.AsyncResult(other).get(timeout=5)
        ours.backend.forget(other)
    finally:
        close_celery(capp)
