"""The ``celeriac bench`` engine: publish, drain and round-trip phases with their rates."""

from __future__ import annotations

import os
import platform
import socket
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from celeriac import __version__

__all__ = ["LOCAL_RABBITMQ", "BenchConfig", "BenchResult", "broker_answers", "run_bench"]

LOCAL_RABBITMQ = "amqp://guest:guest@localhost:5672//"

Progress = Callable[[str, int, int], None]


@dataclass
class BenchConfig:
    tasks: int = 100_000
    latency: int = 1_000
    body_size: int = 0
    prefetch_multiplier: int = 4
    broker: str = "memory://"
    note: str = ""


@dataclass
class BenchResult:
    config: dict[str, Any]
    environment: dict[str, Any]
    publish_rate: float = 0.0
    drain_rate: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    tasks_executed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def broker_answers(host: str = "127.0.0.1", port: int = 5672, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on the AMQP port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def environment() -> dict[str, Any]:
    from celeriac._accel import SPEEDUPS

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "celeriac": __version__,
        "speedups": SPEEDUPS,
        "platform": platform.platform(),
    }


def run_bench(config: BenchConfig, progress: Progress | None = None) -> BenchResult:
    """Run every phase on an app of its own (unique queue and store), then clean up."""
    from celeriac.app import Celery
    from celeriac.testing import start_worker

    run_id = uuid.uuid4().hex[:8]
    queue = f"celeriac.bench.{run_id}"
    app = Celery(
        f"bench{run_id}",
        broker=config.broker,
        backend=f"memory://bench{run_id}",
        set_as_current=False,
    )
    app.conf.task_default_queue = queue
    app.conf.worker_prefetch_multiplier = config.prefetch_multiplier

    @app.task(name="celeriac.bench.noop", ignore_result=True)
    def noop(payload: str = "") -> None:
        return None

    @app.task(name="celeriac.bench.echo")
    def echo(value: int) -> int:
        return value

    result = BenchResult(config={**asdict(config), "queue": queue}, environment=environment())
    payload = "x" * config.body_size
    report = progress or (lambda phase, done, total: None)
    args = (payload,) if payload else ()
    try:
        # publish: the client's side only, a persistent connection
        start = time.perf_counter()
        for i in range(config.tasks):
            noop.apply_async(args)
            if i % 5000 == 0:
                report("publish", i, config.tasks)
        report("publish", config.tasks, config.tasks)
        result.publish_rate = config.tasks / (time.perf_counter() - start)
        product = getattr(app.producer_transport(), "server_product_version", None)
        result.environment["broker"] = product() if callable(product) else config.broker

        # drain: worker start-up excluded; from its first task to its last
        with start_worker(app, pool="solo", queues=[queue]) as worker:
            state = worker.state
            start = time.perf_counter()
            while state.processed < config.tasks:
                time.sleep(0.01)
                report("drain", state.processed, config.tasks)
            elapsed = time.perf_counter() - start
            result.tasks_executed = state.processed
            result.drain_rate = config.tasks / elapsed if elapsed else 0.0
            report("drain", config.tasks, config.tasks)

            samples: list[float] = []
            for i in range(config.latency):
                t0 = time.perf_counter()
                echo.delay(i).get(timeout=10)
                samples.append((time.perf_counter() - t0) * 1000)
                if i % 100 == 0:
                    report("latency", i, config.latency)
            report("latency", config.latency, config.latency)
        if samples:
            result.latency_ms = _percentiles(samples)
    finally:
        if not config.broker.startswith("memory://"):
            _delete_queue(app, queue)
        app.close()
    return result


def _delete_queue(app: Any, queue: str) -> None:
    """Remove what the run declared on a real broker (the queue and its exchange)."""
    try:
        transport = app.connection(heartbeat=0)
        transport.connect()
        try:
            transport.delete_queue(queue)
            transport.delete_exchange(queue)
        finally:
            transport.close()
    except Exception as exc:  # report, but never hide the measurements
        print(f"could not delete the bench queue {queue}: {exc}")


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))]

    return {
        "p50": statistics.median(ordered),
        "p90": pct(0.90),
        "p99": pct(0.99),
        "max": ordered[-1],
    }
