"""The RPC result backend on the embedded broker (the AMQP run is in tests/compat)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from celeriac import Celery, states
from celeriac.errors import NotRegistered, TimeoutError
from celeriac.testing import start_worker


@pytest.fixture
def rpc_app() -> Iterator[Celery]:
    name = uuid.uuid4().hex[:12]
    application = Celery(f"r{name}", broker=f"memory://{name}", backend="rpc://")
    yield application
    application.close()


def test_results_come_back_by_correlation_id(rpc_app: Celery) -> None:
    @rpc_app.task
    def add(x: int, y: int) -> int:
        return x + y

    @rpc_app.task
    def fail() -> None:
        raise ValueError("nope", 3)

    with start_worker(rpc_app):
        results = [add.delay(i, 1) for i in range(200)]
        # read out of order: replies for other tasks are kept, not lost
        assert [r.get(timeout=10) for r in reversed(results)] == [
            i + 1 for i in reversed(range(200))
        ]
        failed = fail.delay()
        with pytest.raises(ValueError) as info:
            failed.get(timeout=10)
        assert info.value.args == ("nope", 3)
        assert failed.state == states.FAILURE
        unknown = rpc_app.send_task("no.such.task")
        with pytest.raises(NotRegistered):
            unknown.get(timeout=10)


def test_reply_queue_is_declared_like_celery(rpc_app: Celery) -> None:
    from celeriac.transports.memory import MemoryBroker

    @rpc_app.task
    def one() -> int:
        return 1

    one.delay()
    broker = MemoryBroker.get(rpc_app.broker_url.split("://", 1)[1])
    assert rpc_app.oid in broker.queue_names()


def test_timeout_and_started_state(rpc_app: Celery) -> None:
    rpc_app.conf.task_track_started = True

    @rpc_app.task
    def slow() -> str:
        return "done"

    with pytest.raises(TimeoutError):
        rpc_app.AsyncResult("never-sent").get(timeout=0.1)
    with start_worker(rpc_app):
        assert slow.delay().get(timeout=10) == "done"
