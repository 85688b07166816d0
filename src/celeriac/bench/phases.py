"""The client's phases of a run: publishing (one connection per publisher) and round trips."""

from __future__ import annotations

import multiprocessing
import signal
import statistics
import time
from collections.abc import Callable
from typing import Any

from celeriac.bench.clients import BenchClient
from celeriac.bench.config import BenchOptions

__all__ = ["Report", "percentiles", "publish", "publish_parallel", "round_trips"]

#: ``report(phase, done, total)``: progress of a phase
Report = Callable[[str, int, int], None]

_STEP = 500


def publish(client: BenchClient, count: int, report: Report) -> float:
    """Publish ``count`` tasks on the client's one connection; return the seconds it took."""
    send = client.send
    step = max(1, min(_STEP, count // 100))
    report("publish", 0, count)
    start = time.perf_counter()
    for i in range(1, count + 1):
        send()
        if i % step == 0:
            report("publish", i, count)
    elapsed = time.perf_counter() - start
    report("publish", count, count)
    return elapsed


def _publisher(
    kind: str,
    opts: BenchOptions,
    count: int,
    ready: Any,
    go: Any,
    done: Any,
    results: Any,
) -> None:
    """One publishing process: connect, wait for the start, publish, report its clock."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops it, and cleans up
    client = BenchClient(kind, opts)
    try:
        client.connect()
        with ready.get_lock():
            ready.value += 1
        go.wait()
        send = client.send
        # time.monotonic is one clock for every process on the machine
        start = time.monotonic()
        for i in range(1, count + 1):
            send()
            if i % _STEP == 0:
                with done.get_lock():
                    done.value += _STEP
        end = time.monotonic()
        with done.get_lock():
            done.value += count % _STEP
        results.put((start, end))
    finally:
        client.close()


def publish_parallel(
    kind: str,
    opts: BenchOptions,
    count: int,
    publishers: int,
    report: Report,
    timeout: float = 120.0,
) -> float:
    """Publish ``count`` tasks from ``publishers`` processes at once, each with its own
    connection; return the seconds from the first one's start to the last one's end
    (process start-up and connecting are not counted).

    Raises:
        RuntimeError: a publisher died or did not get ready in ``timeout`` seconds.
    """
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Value("i", 0)
    done = ctx.Value("q", 0)
    go = ctx.Event()
    results = ctx.Queue()
    shares = [count // publishers + (1 if i < count % publishers else 0) for i in range(publishers)]
    procs = [
        ctx.Process(
            target=_publisher,
            args=(kind, opts, share, ready, go, done, results),
            name=f"celeriac-bench-publisher-{i}",
            daemon=True,
        )
        for i, share in enumerate(shares)
    ]
    try:
        for proc in procs:
            proc.start()
        deadline = time.monotonic() + timeout
        while ready.value < publishers:
            if any(p.exitcode not in (None, 0) for p in procs) or time.monotonic() > deadline:
                raise RuntimeError(f"{publishers} publisher processes did not all get ready")
            time.sleep(0.01)
        report("publish", 0, count)
        go.set()
        clocks: list[tuple[float, float]] = []
        while len(clocks) < publishers:
            report("publish", int(done.value), count)
            while not results.empty() and len(clocks) < publishers:
                clocks.append(results.get())
            if any(p.exitcode not in (None, 0) for p in procs):
                raise RuntimeError("a publisher process died while publishing")
            time.sleep(0.05)
        report("publish", count, count)
        for proc in procs:
            proc.join(timeout)
        return max(end for _, end in clocks) - min(start for start, _ in clocks)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
                proc.join(5)


def round_trips(
    client: BenchClient,
    count: int,
    report: Report,
    samples: list[float],
    timeout: float = 30.0,
) -> None:
    """``count`` sequential ``apply_async(...).get()``, each one's milliseconds appended to
    ``samples`` (kept by the caller, so an interruption leaves what was measured).

    Task ids start with the run's queue name, so the results can be found and deleted.
    """
    prefix = f"{client.opts.queue}.rt."
    step = max(1, count // 100)
    report("latency", 0, count)
    for i in range(count):
        start = time.perf_counter()
        client.round_trip(f"{prefix}{i}", timeout)
        samples.append((time.perf_counter() - start) * 1000.0)
        if i % step == 0:
            report("latency", i, count)
    report("latency", count, count)


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50, p90, p99 and max of ``samples`` (empty when there are none)."""
    if not samples:
        return {}
    ordered = sorted(samples)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))]

    return {
        "p50": statistics.median(ordered),
        "p90": pct(0.90),
        "p99": pct(0.99),
        "max": ordered[-1],
    }
