"""``--sweep``: one table of every configuration, sorted by drain rate, and the winner."""

from __future__ import annotations

from rich.table import Table

from celeriac.bench.report import fmt_rate
from celeriac.bench.results import RunResult

__all__ = ["ranked", "sweep_table", "verdict"]


def ranked(runs: list[RunResult]) -> list[RunResult]:
    """Runs with a drain rate, fastest first."""
    return sorted(
        (r for r in runs if r.drain_rate is not None),
        key=lambda r: r.drain_rate or 0.0,
        reverse=True,
    )


def sweep_table(runs: list[RunResult]) -> Table:
    table = Table(title="celeriac bench --sweep (fastest drain first)")
    for name in ("#", "pool", "-c", "prefetch x", "drain", "publish", "p50 ms", "p99 ms"):
        table.add_column(name, justify="left" if name == "pool" else "right")
    table.add_column("worker CPU", justify="right")
    table.add_column("broker CPU", justify="right")
    table.add_column("peak RSS", justify="right")
    for i, run in enumerate(ranked(runs), 1):
        cfg = run.config
        latency = run.latency_ms
        cpu = run.cpu_summary()["phases"].get("drain", {})
        table.add_row(
            str(i),
            str(cfg["pool"]),
            str(cfg["concurrency"]),
            str(cfg["prefetch_multiplier"]),
            fmt_rate(run.drain_rate, "/s"),
            fmt_rate(run.publish_rate, "/s"),
            f"{latency['p50']:.2f}" if latency else "-",
            f"{latency['p99']:.2f}" if latency else "-",
            _pct(cpu.get("worker_pct")),
            _pct(cpu.get("broker_pct")),
            f"{run.worker_peak_rss_bytes / 2**20:.0f} MiB" if run.worker_peak_rss_bytes else "-",
        )
    return table


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


def verdict(runs: list[RunResult]) -> str:
    """Which configuration drained fastest, and by how much over the next and the slowest."""
    order = ranked(runs)
    if not order:
        return "no configuration finished its drain"
    best = order[0]
    text = f"fastest drain: {best.label} at {fmt_rate(best.drain_rate)}"
    if len(order) > 1:
        second, worst = order[1], order[-1]
        gain = 100.0 * ((best.drain_rate or 0) / (second.drain_rate or 1) - 1)
        text += f", {gain:.0f}% above the next ({second.label}, {fmt_rate(second.drain_rate)})"
        if worst is not second:
            ratio = (best.drain_rate or 0) / (worst.drain_rate or 1)
            text += f" and {ratio:.1f}x the slowest ({worst.label})"
    return text
