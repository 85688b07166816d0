"""Drain rate of a real worker process: pre-published tasks, timed from the broker side.

The worker is started exactly as a user starts it (``celeriac worker`` or ``celery worker``).
The clock starts when the queue's ready count first drops (the first delivery) and stops when
the last task, published after the others, has run; worker start-up is measured on its own.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from celeriac.bench.apps import MARK, NOOP

__all__ = [
    "DrainResult",
    "WorkerProcess",
    "drain_once",
    "publish_tasks",
    "ready_count",
    "time_drain",
    "worker_command",
]


@dataclass
class DrainResult:
    worker: str
    pool: str
    concurrency: int
    prefetch_multiplier: int
    tasks: int
    seconds: float
    startup_seconds: float
    rate: float
    flags: list[str] = field(default_factory=list)


def worker_command(
    kind: str,
    queue: str,
    pool: str,
    concurrency: int,
    prefetch_multiplier: int,
    extra: list[str] | None = None,
) -> list[str]:
    flags = [
        "-P",
        pool,
        "-c",
        str(concurrency),
        "--prefetch-multiplier",
        str(prefetch_multiplier),
        "-Q",
        queue,
        "-l",
        "warning",
        *(extra or []),
    ]
    if kind == "celeriac":
        return [
            sys.executable,
            "-m",
            "celeriac",
            "worker",
            "-A",
            "celeriac.bench.apps:celeriac_app",
            *flags,
        ]
    # "celery": Celery's worker; "celeriac-celery": celeriac's worker running the same
    # celery.Celery app unchanged, started the same way
    program = "celeriac" if kind == "celeriac-celery" else "celery"
    return [
        sys.executable,
        "-m",
        program,
        "-A",
        "celeriac.bench.apps:celery_app",
        "worker",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "-n",
        f"bench-{uuid.uuid4().hex[:6]}@%h",
        *flags,
    ]


class WorkerProcess:
    """A worker command in a session of its own (the terminal's Ctrl-C does not reach it:
    :meth:`stop` ends it, warm first, then the whole process group)."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.command = command
        # closed by stop(); a file, not a pipe, so a talkative worker never blocks on it
        self._log: IO[bytes] = tempfile.TemporaryFile(prefix="celeriac-bench-worker-")  # noqa: SIM115
        self.launched = time.perf_counter()
        self.proc = subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, size: int = 2000) -> str:
        """The end of what the worker wrote to stderr."""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-size:]

    def stop(self, timeout: float = 3.0) -> None:
        """SIGTERM (a warm shutdown); after ``timeout`` seconds, SIGKILL to its group.

        Everything was measured by then, and the run's queue goes afterwards, so a worker
        slow to stop (Celery's warm shutdown can take 10 s here) is not waited for long.
        """
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=timeout)
            # children left behind (a prefork child mid-task) go with the group
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        finally:
            self._log.close()


def ready_count(transport: Any, queue: str) -> int:
    """Messages ready in ``queue`` (a passive declare: it never creates the queue)."""
    return int(transport.declare_queue(queue, passive=True).message_count)


def time_drain(
    admin: Any,
    worker: WorkerProcess,
    queue: str,
    tasks: int,
    marker: str,
    on_start: Callable[[], None] | None = None,
    on_tick: Callable[[int], None] | None = None,
    timeout: float = 600.0,
) -> tuple[float, float]:
    """Wait for the worker to drain ``queue`` (``tasks`` tasks and then the marker task).

    ``on_start`` is called at the first delivery, ``on_tick(delivered)`` about ten times a
    second. Returns (seconds from the first delivery to the marker, start-up seconds from
    launching the worker to the first delivery).

    Raises:
        RuntimeError: the worker exited, or did not finish in ``timeout`` seconds.
    """
    total = tasks + 1
    deadline = worker.launched + timeout
    while ready_count(admin, queue) >= total:
        if not worker.running() or time.perf_counter() > deadline:
            raise RuntimeError(f"the worker never consumed: {worker.log_tail()}")
        time.sleep(0.001)
    started = time.perf_counter()
    if on_start is not None:
        on_start()
    tick = started
    while not os.path.exists(marker):
        now = time.perf_counter()
        if now >= tick:
            tick = now + 0.1
            if not worker.running() or now > deadline:
                raise RuntimeError(
                    f"the worker stopped before the end of the queue: {worker.log_tail()}"
                )
            if on_tick is not None:
                on_tick(total - ready_count(admin, queue))
        time.sleep(0.001)
    done = time.perf_counter()
    return done - started, started - worker.launched


def publish_tasks(app: Any, queue: str, count: int, body_size: int = 0) -> float:
    """Publish ``count`` no-op tasks with celeriac's client; return the publish rate."""
    payload = "x" * body_size if body_size else None
    args = (payload,) if payload is not None else ()
    start = time.perf_counter()
    for _ in range(count):
        app.send_task(NOOP, args, queue=queue, ignore_result=True)
    return count / (time.perf_counter() - start)


def drain_once(
    app: Any,
    kind: str,
    pool: str,
    concurrency: int,
    prefetch_multiplier: int,
    tasks: int,
    queue: str | None = None,
    extra: list[str] | None = None,
    timeout: float = 600.0,
) -> DrainResult:
    """Publish ``tasks`` no-ops and a marker, start the worker, time the drain, stop it."""
    queue = queue or f"celeriac.bench.{uuid.uuid4().hex[:10]}"
    scratch = tempfile.mkdtemp(prefix="celeriac-bench-")
    marker = os.path.join(scratch, "done")
    admin = app.connection(heartbeat=0)
    admin.connect()
    try:
        app.declare_queue(admin, queue, set())
        publish_tasks(app, queue, tasks)
        app.send_task(MARK, (marker,), queue=queue, ignore_result=True)
        while ready_count(admin, queue) < tasks + 1:
            time.sleep(0.01)
        worker = WorkerProcess(
            worker_command(kind, queue, pool, concurrency, prefetch_multiplier, extra),
            {**os.environ, "CELERIAC_BENCH_QUEUE": queue},
        )
        try:
            seconds, startup = time_drain(admin, worker, queue, tasks, marker, timeout=timeout)
        finally:
            worker.stop()
        return DrainResult(
            kind,
            pool,
            concurrency,
            prefetch_multiplier,
            tasks,
            seconds,
            startup,
            tasks / seconds,
            extra or [],
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        try:
            admin.delete_queue(queue)
            admin.delete_exchange(queue)
        finally:
            admin.close()
