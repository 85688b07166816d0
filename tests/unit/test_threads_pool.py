"""The threads pool: parallel tasks, acks settled in the consumer loop's thread, warm stop."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from celeriac import Celery
from celeriac.pool import threads as threads_module
from celeriac.pool.threads import ThreadsPool
from celeriac.testing import start_worker
from celeriac.transports.memory import MemoryBroker, MemoryTransport
from celeriac.worker.state import WorkerState


class FakeRequest:
    """What the pool touches of a Request: the ack/reject callables and their guard."""

    def __init__(self, tag: int, ack: Callable[[Any], None], reject: Any) -> None:
        self.tag = tag
        self._ack = ack
        self._reject = reject
        self.acknowledged = False

    def acknowledge(self) -> None:
        if not self.acknowledged:
            self.acknowledged = True
            self._ack(self.tag)

    def reject(self, requeue: bool = False) -> None:
        if not self.acknowledged:
            self.acknowledged = True
            self._reject(self.tag, requeue)


def broker_of(app: Celery) -> MemoryBroker:
    return MemoryBroker.get(app.broker_url.split("://", 1)[1])


def test_pool_settles_decisions_only_in_tick(monkeypatch: pytest.MonkeyPatch) -> None:
    ran_in: list[str] = []

    def execute(request: Any, state: WorkerState) -> str:
        ran_in.append(threading.current_thread().name)
        if request.tag % 2:
            request.reject(requeue=False)
        else:
            request.acknowledge()
        return "SUCCESS"

    monkeypatch.setattr(threads_module, "execute_request", execute)
    woken = threading.Event()
    settled: list[tuple[str, int, str]] = []
    me = threading.current_thread().name

    def ack(tag: int) -> None:
        settled.append(("ack", tag, threading.current_thread().name))

    def reject(tag: int, requeue: bool) -> None:
        settled.append(("reject", tag, threading.current_thread().name))

    pool = ThreadsPool(WorkerState(), concurrency=3, wakeup=woken.set)
    pool.start()
    try:
        for tag in range(100):
            pool.apply(FakeRequest(tag, ack, reject))  # type: ignore[arg-type]
        deadline = time.monotonic() + 10
        while len(settled) < 100 and time.monotonic() < deadline:
            woken.wait(0.5)
            woken.clear()
            assert pool.tick() is None
    finally:
        pool.stop()
    assert sorted(tag for _, tag, _ in settled) == list(range(100))
    assert {name for _, _, name in settled} == {me}
    assert all(kind == ("reject" if tag % 2 else "ack") for kind, tag, _ in settled)
    assert set(ran_in) <= {f"celeriac-pool-thread-{i}" for i in (1, 2, 3)}
    info = pool.info()
    assert info["implementation"] == "celeriac.pool.threads:ThreadsPool"
    assert info["max-concurrency"] == 3


def test_warm_stop_leaves_unstarted_requests_unsettled(monkeypatch: pytest.MonkeyPatch) -> None:
    started = threading.Semaphore(0)

    def execute(request: Any, state: WorkerState) -> str:
        request.acknowledge()
        started.release()
        time.sleep(0.2)
        return "SUCCESS"

    monkeypatch.setattr(threads_module, "execute_request", execute)
    settled: list[int] = []
    pool = ThreadsPool(WorkerState(), concurrency=2)
    pool.start()
    for tag in range(10):
        pool.apply(FakeRequest(tag, settled.append, None))  # type: ignore[arg-type]
    assert started.acquire(timeout=5) and started.acquire(timeout=5)
    pool.stop()
    pool.tick()
    assert sorted(settled) == [0, 1]


def test_two_thousand_tasks_with_right_results(app: Celery) -> None:
    @app.task
    def mul(x: int, y: int) -> int:
        return x * y

    with start_worker(app, pool="threads", concurrency=4) as worker:
        results = [mul.delay(i, 3) for i in range(2000)]
        assert [r.get(timeout=30) for r in results] == [3 * i for i in range(2000)]
        assert worker.pool.info()["max-concurrency"] == 4
    assert broker_of(app).queue_depth("celery") == 0


def test_tasks_run_in_parallel(app: Celery) -> None:
    @app.task
    def nap() -> str:
        time.sleep(0.5)
        return threading.current_thread().name

    with start_worker(app, pool="threads", concurrency=4):
        start = time.monotonic()
        results = [nap.delay() for _ in range(4)]
        names = [r.get(timeout=10) for r in results]
        elapsed = time.monotonic() - start
    assert elapsed < 1.5, f"4 x 0.5 s took {elapsed:.2f} s: not parallel"
    assert len(set(names)) == 4


def test_acks_happen_in_the_loop_thread(app: Celery, monkeypatch: pytest.MonkeyPatch) -> None:
    ack_threads: set[str] = set()
    original = MemoryTransport.ack

    def ack(self: MemoryTransport, delivery_tag: int, multiple: bool = False) -> None:
        ack_threads.add(threading.current_thread().name)
        original(self, delivery_tag, multiple)

    monkeypatch.setattr(MemoryTransport, "ack", ack)

    @app.task(acks_late=True)
    def work(x: int) -> int:
        return x

    with start_worker(app, pool="threads", concurrency=4):
        assert [work.delay(i).get(timeout=10) for i in range(50)] == list(range(50))
    assert ack_threads
    assert not any(name.startswith("celeriac-pool-thread") for name in ack_threads)
    assert broker_of(app).queue_depth("celery") == 0


def test_warm_stop_leaves_unstarted_messages_for_the_next_worker(app: Celery) -> None:
    lock = threading.Lock()
    runs: dict[int, int] = {}

    @app.task
    def slow(i: int) -> int:
        with lock:
            runs[i] = runs.get(i, 0) + 1
        time.sleep(0.2)
        return i

    total = 40
    with start_worker(app, pool="threads", concurrency=2):
        results = [slow.delay(i) for i in range(total)]
        deadline = time.monotonic() + 10
        while not runs and time.monotonic() < deadline:
            time.sleep(0.01)
    depth = broker_of(app).queue_depth("celery")
    assert 0 < depth < total
    assert len(runs) == total - depth
    with start_worker(app, pool="threads", concurrency=4):
        assert [r.get(timeout=30) for r in results] == list(range(total))
    assert runs == {i: 1 for i in range(total)}
    assert broker_of(app).queue_depth("celery") == 0
