"""Drain rate of a real worker process: pre-published no-op tasks, timed from the broker side.

The worker is started exactly as a user starts it (``celeriac worker`` or ``celery worker``).
The clock starts when the queue's ready count first drops (the first delivery) and stops when
the last task, published after the no-ops, has run; worker start-up is measured on its own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from celeriac.bench.apps import MARK, NOOP

__all__ = ["DrainResult", "drain_once", "publish_tasks", "worker_command"]


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
    return [
        sys.executable,
        "-m",
        "celery",
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


def publish_tasks(app: Any, queue: str, count: int, body_size: int = 0) -> float:
    """Publish ``count`` no-op tasks with celeriac's client; return the publish rate."""
    payload = "x" * body_size if body_size else None
    args = (payload,) if payload is not None else ()
    start = time.perf_counter()
    for _ in range(count):
        app.send_task(NOOP, args, queue=queue, ignore_result=True)
    return count / (time.perf_counter() - start)


def _ready_count(transport: Any, queue: str) -> int:
    return int(transport.declare_queue(queue, passive=True).message_count)


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
    marker = os.path.join(tempfile.mkdtemp(prefix="celeriac-bench-"), "done")
    admin = app.connection(heartbeat=0)
    admin.connect()
    try:
        app.declare_queue(admin, queue, set())
        publish_tasks(app, queue, tasks)
        app.send_task(MARK, (marker,), queue=queue, ignore_result=True)
        while _ready_count(admin, queue) < tasks + 1:
            time.sleep(0.01)
        env = {**os.environ, "CELERIAC_BENCH_QUEUE": queue}
        launched = time.perf_counter()
        proc = subprocess.Popen(
            worker_command(kind, queue, pool, concurrency, prefetch_multiplier, extra),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            started = None
            deadline = launched + timeout
            while started is None:
                if _ready_count(admin, queue) <= tasks:
                    started = time.perf_counter()
                elif proc.poll() is not None or time.perf_counter() > deadline:
                    raise RuntimeError(
                        f"{kind} worker never consumed: "
                        f"{proc.stderr.read().decode()[-2000:] if proc.stderr else ''}"
                    )
                else:
                    time.sleep(0.0005)
            while not os.path.exists(marker):
                if proc.poll() is not None or time.perf_counter() > deadline:
                    raise RuntimeError(f"{kind} worker stopped before the end of the queue")
                time.sleep(0.001)
            done = time.perf_counter()
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        seconds = done - started
        return DrainResult(
            kind,
            pool,
            concurrency,
            prefetch_multiplier,
            tasks,
            seconds,
            started - launched,
            tasks / seconds,
            extra or [],
        )
    finally:
        try:
            admin.delete_queue(queue)
            admin.delete_exchange(queue)
        finally:
            admin.close()
