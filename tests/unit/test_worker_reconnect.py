"""The consumer survives a lost broker connection: reconnects, re-consumes, loses nothing."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from celeriac import Celery
from celeriac.testing import start_worker


@pytest.mark.parametrize(("pool", "concurrency"), [("solo", 1), ("threads", 4)])
def test_connection_killed_mid_stream_loses_nothing(
    app: Celery, pool: str, concurrency: int
) -> None:
    # with threads, tasks of the lost connection finish and settle after it is gone: their
    # acks must go nowhere, not crash the worker
    seen: Counter[int] = Counter()
    lock = threading.Lock()

    @app.task(acks_late=True)
    def record(i: int) -> None:
        if pool == "threads":
            time.sleep(0.001)
        with lock:
            seen[i] += 1

    total = 3000
    for i in range(total):
        record.delay(i)
    with start_worker(app, pool=pool, concurrency=concurrency) as worker:
        consumer = worker.consumer
        kills = 0
        deadline = time.monotonic() + 30
        while len(seen) < total and time.monotonic() < deadline:
            transport = consumer.transport
            if kills < 5 and transport is not None and len(seen) > kills * 400:
                transport.close()  # as if the broker dropped us
                kills += 1
            time.sleep(0.005)
        assert kills == 5
        assert consumer.reconnects >= 5
        window = worker.prefetch_count
    # at-least-once: every task ran; only what was unacked at a kill (at most the prefetch
    # window) may have run twice (acks_late, redelivered)
    assert set(seen) == set(range(total))
    assert sum(seen.values()) - total <= 5 * window


def test_held_eta_task_runs_once_after_reconnect(app: Celery) -> None:
    runs: list[float] = []

    @app.task
    def later() -> None:
        runs.append(time.time())

    with start_worker(app) as worker:
        result = later.apply_async(countdown=0.6)
        deadline = time.monotonic() + 5
        while not worker.state.scheduled and time.monotonic() < deadline:
            time.sleep(0.01)
        assert worker.state.scheduled, "the ETA task was not held"
        transport = worker.consumer.transport
        assert transport is not None
        transport.close()
        result.get(timeout=10)
        time.sleep(0.8)  # long enough for a stray second copy to show up
    assert len(runs) == 1
