"""Wire variants through a running worker: serializers, compression, pickle, v1, predicates."""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import pytest

from celeriac import Celery, Ignore, Reject, states
from celeriac.serialization import dumps
from celeriac.testing import start_worker
from celeriac.transports.memory import MemoryBroker

TRICKY: list[Any] = [
    "ünïcødé ☃ 𝄞",
    2**70,
    -1.5e-300,
    None,
    True,
    {"nested": [1, {"deep": ["x"]}]},
    datetime(2026, 11, 25, 9, 36, 4, 335211, tzinfo=timezone.utc),
    Decimal("1.10"),
    uuid.UUID("cc2de619-5e77-4510-bcef-99ac96565033"),
]


def broker_of(app: Celery) -> MemoryBroker:
    return MemoryBroker.get(app.broker_url.split("://", 1)[1])


@pytest.mark.parametrize("serializer", ["json", "msgpack", "yaml", "pickle"])
def test_serializers_round_trip_through_worker(app: Celery, serializer: str) -> None:
    app.conf.accept_content = ["json", "msgpack", "yaml", "pickle"]
    app.conf.task_serializer = serializer
    app.conf.result_serializer = "pickle" if serializer == "pickle" else "json"

    @app.task
    def echo(*args: Any) -> list[Any]:
        return [type(a).__name__ for a in args]

    values: list[Any] = ["ünïcødé ☃", 12, 1.5, None, True, {"k": [1, 2]}]
    if serializer in ("json", "pickle"):
        values = TRICKY
    with start_worker(app):
        names = echo.apply_async(values).get(timeout=5)
    assert names == [type(v).__name__ for v in values]


@pytest.mark.parametrize("method", ["zlib", "bzip2", "lzma", "zstd", "brotli"])
def test_compressed_messages(app: Celery, method: str) -> None:
    @app.task
    def size(text: str) -> int:
        return len(text)

    with start_worker(app):
        assert size.apply_async(("x" * 100_000,), compression=method).get(timeout=5) == 100_000


def test_pickle_refused_unless_accepted(app: Celery) -> None:
    @app.task
    def echo(x: Any) -> Any:
        return x

    with start_worker(app):
        refused = echo.apply_async((1,), serializer="pickle")
        assert echo.delay(2).get(timeout=5) == 2
        # rejected without requeue and never run: nothing stored, nothing left in the queue
        assert refused.state == states.PENDING
        # the reject goes out with the loop's next ack batch, not before echo(2)'s result
        deadline = time.monotonic() + 5
        while broker_of(app).queue_depth("celery") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert broker_of(app).queue_depth("celery") == 0


def test_protocol_v1_message_runs(app: Celery) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    task_id = str(uuid.uuid4())
    body = {
        "task": add.name,
        "id": task_id,
        "args": [2, 2],
        "kwargs": {},
        "retries": 0,
        "eta": None,
        "expires": None,
        "utc": True,
        "callbacks": None,
        "errbacks": None,
        "timelimit": [None, None],
        "taskset": None,
        "chord": None,
    }
    content_type, encoding, payload = dumps(body, "json")
    with start_worker(app):
        transport = app.producer_transport()
        app.declare_queue(transport, "celery", set())
        transport.publish(
            payload,
            "",
            "celery",
            {},
            {"content_type": content_type, "content_encoding": encoding, "correlation_id": task_id},
        )
        assert app.AsyncResult(task_id).get(timeout=5) == 4


def test_reject_and_ignore(app: Celery) -> None:
    attempts: list[bool] = []

    @app.task(acks_late=True)
    def requeue_once() -> str:
        attempts.append(True)
        if len(attempts) == 1:
            raise Reject("try again", requeue=True)
        return "second time"

    @app.task
    def drop() -> None:
        raise Reject("bad input", requeue=False)

    @app.task
    def ignored() -> None:
        raise Ignore()

    with start_worker(app):
        assert requeue_once.delay().get(timeout=5) == "second time"
        dropped = drop.delay()
        with pytest.raises(Reject):
            dropped.get(timeout=5)
        ignore = ignored.delay()
        marker = requeue_once.delay()
        marker.get(timeout=5)
        assert ignore.state == states.PENDING
    assert len(attempts) == 3


def test_errbacks_and_track_started(app: Celery) -> None:
    seen: list[Any] = []

    @app.task
    def on_error(task_id: str) -> None:
        seen.append(("by-id", task_id))

    @app.task
    def on_error_with_request(request: Any, exc: BaseException, traceback: str) -> None:
        seen.append(("in-worker", request.id, type(exc).__name__))

    @app.task(track_started=True, bind=True)
    def fails(self: Any) -> None:
        seen.append(("state-while-running", app.AsyncResult(self.request.id).state))
        raise LookupError("nope")

    with start_worker(app):
        result = fails.apply_async(link_error=[on_error.s(), on_error_with_request.s()])
        with pytest.raises(LookupError):
            result.get(timeout=5)
        # the by-id errback is a task message of its own; wait for it
        for _ in range(200):
            if any(s[0] == "by-id" for s in seen):
                break
            import time

            time.sleep(0.01)
    assert ("state-while-running", states.STARTED) in seen
    assert ("by-id", result.id) in seen
    assert ("in-worker", result.id, "LookupError") in seen
