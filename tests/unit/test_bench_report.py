"""What the bench reports from its runs: CPU totals, the sweep's winner, medians and ratios,
and the plot."""

from __future__ import annotations

from pathlib import Path

import pytest

from celeriac.bench import against
from celeriac.bench.cpu import CpuSplit
from celeriac.bench.phases import percentiles
from celeriac.bench.results import RunResult
from celeriac.bench.sweep import ranked, verdict


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


def test_sweep_verdict_names_the_winner_and_the_margin() -> None:
    runs = [
        _run(pool="solo", prefetch=1, drain=2.0),  # 500/s
        _run(pool="threads", prefetch=16, drain=0.5),  # 2000/s
        _run(pool="solo", prefetch=16, drain=1.0),  # 1000/s
        _run(pool="threads", prefetch=1, drain=None),  # interrupted
    ]
    assert [r.label for r in ranked(runs)] == ["threads -c 1 x16", "solo -c 1 x16", "solo -c 1 x1"]
    text = verdict(runs)
    assert text.startswith("fastest drain: threads -c 1 x16 at 2,000 tasks/s")
    assert "100% above the next (solo -c 1 x16" in text
    assert "4.0x the slowest (solo -c 1 x1)" in text


def test_orders_alternate_which_worker_goes_first() -> None:
    assert against.orders(["celeriac", "celery"], 3) == [
        ["celeriac", "celery"],
        ["celery", "celeriac"],
        ["celeriac", "celery"],
    ]


def test_summary_medians_ranges_and_ratio() -> None:
    runs = [
        _run("celeriac", drain=0.1),  # 10,000/s
        _run("celery", drain=1.0),  # 1,000/s
        _run("celeriac", drain=0.125),  # 8,000/s
        _run("celery", drain=0.5),  # 2,000/s
        _run("celeriac", drain=0.2),  # 5,000/s
        _run("celery", drain=None),  # did not finish
    ]
    data = against.summary(runs, ["celeriac", "celery"])
    drain = data["drain_rate"]
    assert drain["celeriac"] == {"median": 8000, "min": 5000, "max": 10000, "runs": 3}
    assert drain["celery"]["median"] == 1500 and drain["celery"]["runs"] == 2
    assert drain["ratio"] == pytest.approx(8000 / 1500)
    assert data["latency_p50"]["celeriac"] is None and "ratio" not in data["latency_p50"]


def test_plot_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from celeriac.bench.plot import plot

    runs = [
        _run(pool=pool, prefetch=prefetch, drain=1.0 / (prefetch * (2 if pool == "solo" else 3)))
        for pool in ("solo", "threads")
        for prefetch in (1, 4, 16, 64)
    ]
    runs[0].latency_samples = [0.5 + i / 100 for i in range(200)]
    out = tmp_path / "sweep.png"
    plot(runs, str(out))
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert 20_000 < len(data) < 2_000_000
