"""Monitoring events (``-E`` and worker heartbeats) from ``celery worker`` and ``celeriac
worker`` running the sample Celery project: the same events reach a Celery event receiver."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.compat.celery_run import Run

pytestmark = pytest.mark.integration

WORKERS = [
    pytest.param(("celery", "prefork"), id="celery-prefork"),
    pytest.param(("celeriac", "prefork"), id="celeriac-prefork"),
    pytest.param(("celeriac", "threads"), id="celeriac-threads"),
]


class EventLog:
    """Every event of one node, captured by Celery's receiver in a thread."""

    def __init__(self, client: Any, hostname: str) -> None:
        self.hostname = hostname
        self.events: list[dict[str, Any]] = []
        self._ready = threading.Event()
        self._conn = client.connection_for_read()
        self._receiver = client.events.Receiver(self._conn, handlers={"*": self._on_event})
        self._receiver.on_consume_ready = lambda *args, **kwargs: self._ready.set()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(20), "the event receiver did not start"

    def _run(self) -> None:
        self._receiver.capture(limit=None, timeout=None, wakeup=False)

    def _on_event(self, event: dict[str, Any]) -> None:
        if event.get("hostname") == self.hostname:
            self.events.append(event)

    def of(self, type: str, uuid: str | None = None) -> list[dict[str, Any]]:
        return [
            e for e in self.events if e["type"] == type and (uuid is None or e.get("uuid") == uuid)
        ]

    def wait(self, check: Callable[[], Any], timeout: float = 20.0) -> Any:
        deadline = time.monotonic() + timeout
        while not check() and time.monotonic() < deadline:
            time.sleep(0.05)
        return check()

    def close(self) -> None:
        self._receiver.should_stop = True
        self._thread.join(timeout=5)
        self._conn.release()


@pytest.fixture(scope="module", params=WORKERS)
def run(request: pytest.FixtureRequest) -> Iterator[tuple[Run, EventLog]]:
    kind, pool = request.param
    made = Run(kind, "amqp", pool, extra=("-E", "--heartbeat-interval", "1"))
    log = EventLog(made.client, made.nodename)
    try:
        made.start()
        yield made, log
    finally:
        made.stop()
        log.close()
        made.cleanup()


def test_worker_online_and_heartbeats(run: tuple[Run, EventLog]) -> None:
    _, log = run
    assert log.wait(lambda: log.of("worker-online"))
    assert log.wait(lambda: log.of("worker-heartbeat"), timeout=10)
    beat = log.of("worker-heartbeat")[0]
    assert beat["freq"] == 1.0
    assert {"active", "processed", "loadavg", "sw_ident", "sw_ver", "pid", "clock"} <= set(beat)


def test_task_events_of_a_success(run: tuple[Run, EventLog]) -> None:
    worker, log = run
    result = worker.send("cp.add", 2, 3)
    assert result.get(timeout=20) == 5
    assert log.wait(lambda: log.of("task-succeeded", result.id))
    received = log.of("task-received", result.id)
    assert len(received) == 1
    assert received[0]["name"] == "cp.add"
    assert received[0]["args"] == "(2, 3)"
    assert len(log.of("task-started", result.id)) == 1
    succeeded = log.of("task-succeeded", result.id)
    assert len(succeeded) == 1
    assert succeeded[0]["result"] == "5"
    assert succeeded[0]["runtime"] >= 0


def test_task_events_of_a_failure_and_a_retry(run: tuple[Run, EventLog]) -> None:
    worker, log = run
    failed = worker.send("cp.fail", "boom", 1)
    with pytest.raises(Exception, match="boom"):
        failed.get(timeout=20)
    assert log.wait(lambda: log.of("task-failed", failed.id))
    event = log.of("task-failed", failed.id)[0]
    assert "ProjectError" in event["exception"]
    assert "boom" in event["traceback"]
    retried = worker.send("cp.audited_retry")
    assert retried.get(timeout=20) == "retried"
    assert log.wait(lambda: log.of("task-succeeded", retried.id))
    assert len(log.of("task-retried", retried.id)) == 1
    assert "once more" in log.of("task-retried", retried.id)[0]["exception"]


def test_worker_offline_on_shutdown(run: tuple[Run, EventLog]) -> None:
    worker, log = run
    assert worker.stop() == 0, worker.output
    assert log.wait(lambda: log.of("worker-offline"), timeout=10)
