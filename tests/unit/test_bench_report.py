"""What the bench reports from a run: percentiles, CPU totals, what an interruption keeps."""

from __future__ import annotations

import pytest

from celeriac.bench.cpu import CpuSplit
from celeriac.bench.phases import percentiles
from celeriac.bench.results import RunResult


def _run(
    worker: str = "celeriac",
    pool: str = "solo",
    prefetch: int = 4,
    drain: float | None = 1.0,
    publish: float = 0.5,
    latency: list[float] | None = None,
) -> RunResult:
    run = RunResult(
        worker,
        {"pool": pool, "concurrency": 1, "prefetch_multiplier": prefetch},
        label=f"{pool} -c 1 x{prefetch}",
        tasks=1000,
    )
    run.publish_seconds = publish
    run.drain_seconds = drain
    run.latency_samples = list(latency or [])
    run.phase = "done"
    return run


def test_percentiles() -> None:
    data = percentiles([float(i) for i in range(1, 101)])
    assert data["p50"] == 50.5
    assert data["p90"] == 91 and data["p99"] == 100 and data["max"] == 100
    assert percentiles([]) == {}


def test_cpu_summary_counts_the_worker_over_its_own_phases() -> None:
    run = _run()
    run.cpu["publish"] = CpuSplit(wall_s=1.0, broker_s=0.5, worker_s=None, client_s=0.9)
    run.cpu["drain"] = CpuSplit(wall_s=2.0, broker_s=1.5, worker_s=1.0, client_s=0.1)
    cpu = run.cpu_summary()
    assert cpu["broker_s"] == 2.0 and cpu["broker_pct"] == pytest.approx(200 / 3)
    assert cpu["worker_s"] == 1.0 and cpu["worker_pct"] == 50.0
    assert cpu["phases"]["drain"]["worker_pct"] == 50.0
    assert cpu["phases"]["publish"]["worker_s"] is None


def test_unmeasured_broker_stays_none() -> None:
    run = _run()
    run.cpu["drain"] = CpuSplit(wall_s=2.0, broker_s=None, worker_s=1.0, client_s=0.1)
    assert run.cpu_summary()["broker_s"] is None


def test_interrupted_run_keeps_its_rate_so_far() -> None:
    run = RunResult("celeriac", {}, tasks=1000)
    seen: list[tuple[str, int, int]] = []
    report = run.track(lambda *args: seen.append(args))
    report("publish", 0, 1000)
    report("publish", 100, 1000)
    report("publish", 300, 1000)
    assert len(seen) == 3
    rate, done, total = run.partial_rate("publish") or (0, 0, 0)
    assert (done, total) == (300, 1000) and rate > 0
    assert run.as_dict()["partial"]["publish"]["done"] == 300
    assert run.as_dict()["interrupted_in"] == "start"
