"""``--against celery`` and ``--repeat``: medians with their range per worker, and the ratio
celeriac/Celery per metric."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

from rich.table import Table

from celeriac.bench.results import RunResult

__all__ = ["METRICS", "medians", "orders", "ratio_line", "summary", "summary_table"]

#: (key, label, unit, higher is better, how to read it from a run)
METRICS: list[tuple[str, str, str, bool, Callable[[RunResult], float | None]]] = [
    ("publish_rate", "publish", "tasks/s", True, lambda r: r.publish_rate),
    ("drain_rate", "drain", "tasks/s", True, lambda r: r.drain_rate),
    ("latency_p50", "latency p50", "ms", False, lambda r: r.latency_ms.get("p50")),
    ("latency_p90", "latency p90", "ms", False, lambda r: r.latency_ms.get("p90")),
    ("latency_p99", "latency p99", "ms", False, lambda r: r.latency_ms.get("p99")),
    ("latency_max", "latency max", "ms", False, lambda r: r.latency_ms.get("max")),
    (
        "worker_cpu_s",
        "worker CPU",
        "s",
        False,
        lambda r: r.cpu_summary()["worker_s"],
    ),
    (
        "worker_peak_rss_mib",
        "worker peak RSS",
        "MiB",
        False,
        lambda r: r.worker_peak_rss_bytes / 2**20 if r.worker_peak_rss_bytes else None,
    ),
]


def orders(kinds: list[str], repeat: int) -> list[list[str]]:
    """The order of the workers in each round: it alternates, so drift favours neither."""
    return [kinds if i % 2 == 0 else list(reversed(kinds)) for i in range(repeat)]


def summary(runs: list[RunResult], kinds: list[str]) -> dict[str, Any]:
    """Per metric and worker: median, min, max over the finished runs; and the ratio of the
    medians, first worker over second."""
    out: dict[str, Any] = {}
    for key, _label, unit, higher, read in METRICS:
        entry: dict[str, Any] = {"unit": unit, "higher_is_better": higher}
        for kind in kinds:
            values = [v for r in runs if r.worker == kind and (v := read(r)) is not None]
            entry[kind] = (
                {
                    "median": statistics.median(values),
                    "min": min(values),
                    "max": max(values),
                    "runs": len(values),
                }
                if values
                else None
            )
        if len(kinds) == 2 and entry[kinds[0]] and entry[kinds[1]] and entry[kinds[1]]["median"]:
            entry["ratio"] = entry[kinds[0]]["median"] / entry[kinds[1]]["median"]
        out[key] = entry
    return out


def _cell(stats: dict[str, Any] | None) -> str:
    if not stats:
        return "-"
    fmt = "{:,.0f}" if stats["median"] >= 100 else "{:,.2f}"
    text = fmt.format(stats["median"])
    if stats["runs"] > 1:
        text += f" ({fmt.format(stats['min'])}-{fmt.format(stats['max'])})"
    return text


def summary_table(data: dict[str, Any], kinds: list[str], repeat: int) -> Table:
    names = {"celeriac": "celeriac", "celery": "Celery"}
    title = f"median of {repeat} (min-max)" if repeat > 1 else "one run"
    table = Table(title=f"celeriac bench: {' vs '.join(names[k] for k in kinds)}, {title}")
    table.add_column("metric")
    for kind in kinds:
        table.add_column(names[kind], justify="right")
    if len(kinds) == 2:
        table.add_column(f"{names[kinds[0]]}/{names[kinds[1]]}", justify="right")
    for key, label, unit, higher, _read in METRICS:
        entry = data[key]
        row = [f"{label} ({unit}, {'higher' if higher else 'lower'} is better)"]
        row += [_cell(entry[kind]) for kind in kinds]
        if len(kinds) == 2:
            row.append(f"{entry['ratio']:.2f}x" if "ratio" in entry else "-")
        table.add_row(*row)
    return table


def ratio_line(data: dict[str, Any]) -> str:
    """The headline ratios, celeriac over Celery."""
    text = (
        f"celeriac/Celery: drain {data['drain_rate']['ratio']:.2f}x, "
        f"publish {data['publish_rate']['ratio']:.2f}x"
    )
    if "ratio" in data["latency_p50"]:
        text += f", latency p50 {data['latency_p50']['ratio']:.2f}x (lower is better)"
    return text


def medians(data: dict[str, Any], kind: str) -> dict[str, Any]:
    """The top-level numbers of repeated runs: the medians of ``kind``'s runs."""

    def median(key: str) -> float | None:
        stats = data[key].get(kind)
        return stats["median"] if stats else None

    return {
        "publish_rate": median("publish_rate"),
        "drain_rate": median("drain_rate"),
        "latency_ms": {name: median(f"latency_{name}") for name in ("p50", "p90", "p99", "max")},
    }
