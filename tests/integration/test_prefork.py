"""The prefork pool against real RabbitMQ and Redis, with a ledger kept in Redis.

The tasks record every run in a Redis hash (``run:<i>`` -> count) and list (pids), outside
the worker, so a task lost, run twice, or run in the wrong process shows up there.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from celeriac import Celery
from celeriac.errors import SoftTimeLimitExceeded
from celeriac.testing import start_worker

REDIS_URL = "redis://127.0.0.1:6379/15"

pytestmark = pytest.mark.usefixtures("amqp_url")


class Ledger:
    def __init__(self) -> None:
        self.prefix = f"celeriac.test.{uuid.uuid4().hex[:12]}"
        self.r = redis.Redis.from_url(REDIS_URL)
        self._clients = {os.getpid(): self.r}

    def client(self) -> redis.Redis:
        """This process's client, for the tasks.

        The workers here are threads of the test process, so a child is forked while the test
        thread may hold a lock of ``self.r``'s pool, and redis-py takes that lock when a
        forked pool resets itself: a child sharing ``self.r`` can hang for good.
        """
        client = self._clients.get(os.getpid())
        if client is None:
            client = self._clients[os.getpid()] = redis.Redis.from_url(REDIS_URL)
        return client

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}"

    def runs(self) -> dict[int, int]:
        return {int(k): int(v) for k, v in self.r.hgetall(self.key("runs")).items()}

    def pids(self) -> list[int]:
        return [int(p) for p in self.r.lrange(self.key("pids"), 0, -1)]

    def wait_runs(self, n: int, timeout: float) -> dict[int, int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.r.hlen(self.key("runs")) >= n:
                break
            time.sleep(0.05)
        return self.runs()


@pytest.fixture
def env(amqp_url: str) -> Iterator[tuple[Celery, Ledger, str]]:
    ledger = Ledger()
    queue = f"{ledger.prefix}.q"
    app = Celery("prefork_test", broker=amqp_url, backend=REDIS_URL)
    app.conf.task_default_queue = queue
    app.conf.worker_prefetch_multiplier = 4
    r = ledger.r
    runs, pids = ledger.key("runs"), ledger.key("pids")

    @app.task(name="pf.getpid")
    def getpid(i: int) -> int:
        client = ledger.client()
        client.hincrby(runs, str(i), 1)
        client.rpush(pids, os.getpid())
        return os.getpid()

    @app.task(name="pf.sleep")
    def nap(seconds: float) -> str:
        ledger.client().set(ledger.key("slept"), time.time())
        time.sleep(seconds)
        return "woke"

    @app.task(name="pf.soft")
    def soft(seconds: float) -> str:
        try:
            time.sleep(seconds)
        except SoftTimeLimitExceeded:
            return "caught"
        return "not caught"

    @app.task(name="pf.die")
    def die() -> None:
        os._exit(1)

    @app.task(name="pf.die_late", acks_late=True, reject_on_worker_lost=True)
    def die_late() -> None:
        ledger.client().rpush(ledger.key("late"), os.getpid())
        os._exit(1)

    hog: list[bytes] = []

    @app.task(name="pf.hog")
    def grow(mb: int) -> int:
        chunk = bytearray(mb * 1024 * 1024)
        for off in range(0, len(chunk), 4096):
            chunk[off] = 1
        hog.append(bytes(chunk))
        return os.getpid()

    try:
        yield app, ledger, queue
    finally:
        with app.connection() as conn:  # type: ignore[attr-defined]
            conn.delete_queue(queue)
        keys = list(r.scan_iter(f"{ledger.prefix}*"))
        if keys:
            r.delete(*keys)
        app.close()


def _send(app: Celery, name: str, *args: Any, **options: Any) -> Any:
    return app.tasks[name].apply_async(args, **options)


def _no_leftovers(app: Celery, results: list[Any]) -> None:
    keys = [f"celery-task-meta-{res.id}" for res in results]
    r = redis.Redis.from_url(REDIS_URL)
    for i in range(0, len(keys), 500):
        r.delete(*keys[i : i + 500])


def test_max_tasks_per_child_recycles_and_runs_everything_once(
    env: tuple[Celery, Ledger, str],
) -> None:
    app, ledger, _ = env
    with start_worker(app, pool="prefork", concurrency=2, max_tasks_per_child=10) as worker:
        results = [_send(app, "pf.getpid", i) for i in range(500)]
        runs = ledger.wait_runs(500, timeout=60)
        values = [res.get(timeout=10) for res in results]
        info = worker.pool.info()
    _no_leftovers(app, results)
    assert sorted(runs) == list(range(500))
    assert set(runs.values()) == {1}
    assert len(set(values)) >= 50
    assert len(set(ledger.pids())) >= 50
    assert info["max-tasks-per-child"] == 10
    assert len(info["processes"]) == 2


def test_hard_time_limit_kills_fails_and_the_pool_goes_on(
    env: tuple[Celery, Ledger, str],
) -> None:
    app, ledger, _ = env
    with start_worker(app, pool="prefork", concurrency=2, time_limit=1) as worker:
        slow = _send(app, "pf.sleep", 30)
        with pytest.raises(Exception) as excinfo:
            slow.get(timeout=10)
        # from the moment the task started, so a loaded machine's start-up delay is not in it
        elapsed = time.time() - float(ledger.r.get(ledger.key("slept")) or 0)
        results = [_send(app, "pf.getpid", i) for i in range(100)]
        runs = ledger.wait_runs(100, timeout=30)
        caught = _send(app, "pf.soft", 5, soft_time_limit=0.3, time_limit=3)
        assert caught.get(timeout=10) == "caught"
        assert len(worker.pool.info()["processes"]) == 2
    _no_leftovers(app, [*results, slow, caught])
    assert type(excinfo.value).__name__ == "TimeLimitExceeded"
    assert slow.state == "FAILURE"
    assert elapsed < 2.0
    assert sorted(runs) == list(range(100)) and set(runs.values()) == {1}


def test_child_exit_is_worker_lost_and_the_rest_runs_once(
    env: tuple[Celery, Ledger, str],
) -> None:
    app, ledger, _ = env
    app.conf.worker_lost_max_redeliveries = 2
    with start_worker(app, pool="prefork", concurrency=2):
        before = [_send(app, "pf.getpid", i) for i in range(500)]
        lost = _send(app, "pf.die")
        late = _send(app, "pf.die_late")
        after = [_send(app, "pf.getpid", i) for i in range(500, 1000)]
        with pytest.raises(Exception) as lost_exc:
            lost.get(timeout=30)
        with pytest.raises(Exception) as late_exc:
            late.get(timeout=30)
        runs = ledger.wait_runs(1000, timeout=60)
    _no_leftovers(app, [*before, *after, lost, late])
    assert type(lost_exc.value).__name__ == "WorkerLostError"
    assert "exitcode 1" in str(lost_exc.value)
    assert type(late_exc.value).__name__ == "WorkerLostError"
    # first run plus two redeliveries, then failed
    assert ledger.r.llen(ledger.key("late")) == 3
    assert sorted(runs) == list(range(1000)) and set(runs.values()) == {1}


def _pipe_inodes(pid: int) -> set[int]:
    inodes = set()
    for name in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{name}")
            if target.startswith("pipe:["):
                inodes.add(int(target[6:-1]))
    return inodes


def test_a_replacement_child_holds_no_pipe_of_the_dead_one(
    env: tuple[Celery, Ledger, str],
) -> None:
    # a child keeping a dead sibling's result pipe open keeps that pipe registered in the
    # parent's epoll after the parent closes it: readable forever, the loop spins and stalls
    app, _, _ = env
    with start_worker(app, pool="prefork", concurrency=1) as worker:
        (proc,) = worker.pool._procs.values()
        dead_pipe = os.fstat(proc.result_fd).st_ino
        with pytest.raises(Exception, match="exitcode 1"):
            _send(app, "pf.die").get(timeout=20)
        replacement = _send(app, "pf.getpid", 0).get(timeout=20)
        assert replacement != proc.pid
        assert dead_pipe not in _pipe_inodes(replacement)
        assert _send(app, "pf.getpid", 1).get(timeout=20) == replacement


def test_max_memory_per_child_recycles_a_grown_child(env: tuple[Celery, Ledger, str]) -> None:
    app, _, _ = env
    with start_worker(app, pool="prefork", concurrency=1, max_memory_per_child=150_000) as worker:
        first = _send(app, "pf.hog", 200).get(timeout=20)
        deadline = time.monotonic() + 10
        while worker.pool.info()["processes"] == [first] and time.monotonic() < deadline:
            time.sleep(0.05)
        second = _send(app, "pf.getpid", 0).get(timeout=20)
    assert second != first


def test_memory_limit_below_a_fresh_child_warns_once_and_does_not_loop(
    env: tuple[Celery, Ledger, str], caplog: pytest.LogCaptureFixture
) -> None:
    app, ledger, _ = env
    caplog.set_level(logging.WARNING, logger="celeriac.pool.prefork")
    with start_worker(app, pool="prefork", concurrency=2, max_memory_per_child=1) as worker:
        results = [_send(app, "pf.getpid", i) for i in range(200)]
        runs = ledger.wait_runs(200, timeout=30)
        starts = worker.pool.starts
    _no_leftovers(app, results)
    warnings = [r for r in caplog.records if "below a fresh child's RSS" in r.getMessage()]
    assert len(warnings) == 1
    assert sorted(runs) == list(range(200))
    assert starts < 6  # two children, at most a few replacements


def test_autoscale_grows_under_load_and_fair_dispatch_runs_everything(
    env: tuple[Celery, Ledger, str],
) -> None:
    app, ledger, _ = env
    with start_worker(app, pool="prefork", autoscale=(3, 1), fair=True) as worker:
        assert len(worker.pool.info()["processes"]) == 1
        naps = [_send(app, "pf.sleep", 0.5) for _ in range(9)]
        grown = 0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and grown < 3:
            grown = max(grown, len(worker.pool.info()["processes"]))
            time.sleep(0.05)
        assert [res.get(timeout=20) for res in naps] == ["woke"] * 9
        results = [_send(app, "pf.getpid", i) for i in range(50)]
        runs = ledger.wait_runs(50, timeout=30)
    _no_leftovers(app, [*naps, *results])
    assert grown == 3
    assert sorted(runs) == list(range(50)) and set(runs.values()) == {1}


def test_warm_stop_finishes_running_task_and_leaves_the_rest_to_the_broker(
    env: tuple[Celery, Ledger, str],
) -> None:
    app, ledger, _ = env
    with start_worker(app, pool="prefork", concurrency=1) as worker:
        slow = _send(app, "pf.sleep", 1.0)
        queued = [_send(app, "pf.getpid", i) for i in range(5)]
        deadline = time.monotonic() + 10
        while not worker.pool.info()["children"][0]["busy"] and time.monotonic() < deadline:
            time.sleep(0.02)
    assert slow.get(timeout=5) == "woke"
    with start_worker(app, pool="prefork", concurrency=1):
        runs = ledger.wait_runs(5, timeout=20)
    _no_leftovers(app, [slow, *queued])
    assert sorted(runs) == list(range(5)) and set(runs.values()) == {1}


def test_spawned_children_import_the_app_and_run_tasks(amqp_url: str) -> None:
    from tests.integration import spawn_app

    app = spawn_app.app
    queue = f"celeriac.test.spawn.{uuid.uuid4().hex[:8]}"
    app.conf.task_default_queue = queue
    try:
        with start_worker(app, pool="prefork", concurrency=2, start_method="spawn") as worker:
            results = [spawn_app.whoami.delay() for _ in range(20)]
            values = [res.get(timeout=30) for res in results]
            children = set(worker.pool.info()["processes"])
        _no_leftovers(app, results)
    finally:
        with app.connection() as conn:  # type: ignore[attr-defined]
            conn.delete_queue(queue)
        app.close()
    assert {pid for pid, _ in values} <= children
    assert os.getpid() not in children
    # a forked child would have the test runner's modules; a spawned one starts afresh
    assert not any(forked for _, forked in values)


def test_spawn_needs_an_importable_app(amqp_url: str) -> None:
    app = Celery("local", broker=amqp_url)
    app.conf.task_default_queue = f"celeriac.test.spawn.{uuid.uuid4().hex[:8]}"
    try:
        with (
            pytest.raises(Exception, match="not a module-level name"),
            start_worker(app, pool="prefork", concurrency=1, start_method="spawn"),
        ):
            pass
    finally:
        with app.connection() as conn:  # type: ignore[attr-defined]
            conn.delete_queue(app.conf.task_default_queue)
        app.close()


def test_an_unknown_start_method_is_refused(env: tuple[Celery, Ledger, str]) -> None:
    app, _, _ = env
    with pytest.raises(Exception, match="start method must be one of fork, spawn"):
        app.Worker(pool="prefork", concurrency=1, start_method="forkserver").pool  # noqa: B018
