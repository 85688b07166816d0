"""What ``celeriac bench`` prints (header and tables) and writes (``--json``)."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table

from celeriac.bench.broker import BrokerInfo
from celeriac.bench.config import BenchOptions
from celeriac.bench.results import PHASES, RunResult

__all__ = [
    "cpu_table",
    "document",
    "fmt_bytes",
    "fmt_rate",
    "print_header",
    "run_table",
    "write_json",
]


def fmt_rate(value: float | None, unit: str = "tasks/s") -> str:
    return "-" if value is None else f"{value:,.0f} {unit}"


def fmt_bytes(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:,.1f} MiB"


def _fmt_cpu(seconds: float | None, pct: float | None) -> str:
    if seconds is None:
        return "not measured"
    return f"{seconds:.2f} s ({pct:.0f}%)" if pct is not None else f"{seconds:.2f} s"


def print_header(
    console: Console,
    env: dict[str, Any],
    broker: BrokerInfo,
    opts: BenchOptions,
    notes: list[str],
    workers: list[str] | None = None,
) -> None:
    """Machine, versions, broker, the worker command and every option of the run."""
    console.print(
        f"[bold]celeriac bench[/] · celeriac {env['celeriac']} (speedups: {env['speedups']}) · "
        f"{env['implementation']} {env['python']}"
    )
    console.print(
        f"machine: {env['cores']} cores · {env['cpu']} · "
        f"{env['memory_bytes'] / 2**30:.1f} GiB · {env['platform']}"
    )
    where = f"pid {broker.pid}, {broker.process}" if broker.pid else broker.process or "?"
    console.print(f"broker: {broker.product} at {broker.url} ({where})")
    if opts.embedded:
        console.print("worker: in this process (start_worker), the embedded broker's only option")
    else:
        flags = " ".join(opts.worker_flags())
        commands = " and ".join(f"`{kind} worker {flags}`" for kind in workers or [opts.worker])
        console.print(f"worker: {commands}, each a process of its own")
    flags = " ".join(f"{k}={v}" for k, v in opts.as_dict().items() if k != "worker")
    console.print(f"options: {flags}", highlight=False)
    for note in [*notes, broker.note]:
        if note:
            console.print(f"[yellow]note:[/] {note}")


def _rate(result: RunResult, phase: str, rate: float | None) -> str:
    if rate is None and (partial := result.partial_rate(phase)):
        so_far, done, total = partial
        return f"{fmt_rate(so_far)} (stopped at {done:,} of {total:,})"
    return fmt_rate(rate)


def run_table(result: RunResult, title: str = "celeriac bench") -> Table:
    """The numbers of one run (what an interruption left out shows as ``-``)."""
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    config = result.config
    publishers = config.get("publishers", 1)
    how = f"{publishers} publishers" if publishers > 1 else "1 connection"
    if config.get("confirm"):
        how += ", confirms"
    table.add_row(f"publish rate ({how})", _rate(result, "publish", result.publish_rate))
    table.add_row(f"drain rate ({result.label})", _rate(result, "drain", result.drain_rate))
    raw = result.raw or {}
    if raw.get("consume_rate"):
        how = f"bare AMQP client, prefetch {raw['prefetch']}"
        table.add_row(f"raw consume ({how})", fmt_rate(raw["consume_rate"], "msgs/s"))
        if raw.get("drain_pct") is not None:
            table.add_row("worker drain / raw consume", f"{raw['drain_pct']:.0f}%")
        table.add_row("raw publish (bare AMQP client)", fmt_rate(raw.get("publish_rate"), "msgs/s"))
    if result.startup_seconds is not None:
        table.add_row("worker start-up (not in the drain)", f"{result.startup_seconds:.2f} s")
    latency = result.latency_ms
    for key in ("p50", "p90", "p99", "max"):
        table.add_row(f"latency {key}", f"{latency[key]:.3f} ms" if key in latency else "-")
    cpu = result.cpu_summary()
    for party, what in (
        ()
        if not result.cpu
        else (
            ("broker", "broker"),
            ("worker", "worker process tree"),
            ("client", "client"),
        )
    ):
        table.add_row(f"CPU {what} (% of a core)", _fmt_cpu(cpu[f"{party}_s"], cpu[f"{party}_pct"]))
    table.add_row("worker peak RSS", fmt_bytes(result.worker_peak_rss_bytes))
    return table


def cpu_table(result: RunResult) -> Table:
    """CPU seconds per party and phase, with % of one core over each phase."""
    table = Table(title="CPU seconds (% of one core) per phase")
    table.add_column("process")
    phases = [p for p in PHASES if p in result.cpu]
    for phase in phases:
        table.add_column(phase, justify="right")
    summary = result.cpu_summary()
    table.add_column("total", justify="right")
    for party in ("broker", "worker", "client"):
        row = [party]
        for phase in phases:
            data = summary["phases"][phase]
            if party == "worker" and phase == "publish" and data["worker_s"] is None:
                row.append("not started")  # the worker starts after publishing
                continue
            row.append(_fmt_cpu(data[f"{party}_s"], data[f"{party}_pct"]))
        row.append(_fmt_cpu(summary[f"{party}_s"], summary[f"{party}_pct"]))
        table.add_row(*row)
    return table


def document(
    primary: RunResult | None,
    env: dict[str, Any],
    broker: BrokerInfo,
    opts: BenchOptions,
    notes: list[str],
    **extra: Any,
) -> dict[str, Any]:
    """The ``--json`` document: the primary run's numbers at the top level, anything more
    under ``extra`` keys."""
    doc: dict[str, Any] = {
        "publish_rate": None,
        "drain_rate": None,
        "latency_ms": {},
        "cpu": {"broker_s": None, "worker_s": None, "client_s": None},
        "worker_peak_rss_bytes": None,
    }
    if primary is not None:
        doc.update(primary.as_dict())
    doc["config"] = primary.config if primary is not None else opts.as_dict()
    doc["environment"] = {
        **env,
        "broker": broker.product,
        "broker_info": broker.as_dict(),
        "worker_mode": "in-process" if opts.embedded else "process",
        "notes": [n for n in [*notes, broker.note] if n],
    }
    doc.update(extra)
    return doc


def write_json(path: str, doc: dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=2, default=str)
