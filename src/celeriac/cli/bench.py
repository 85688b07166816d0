"""``celeriac bench``: measure publish, drain and round-trip rates, with a live progress bar."""

from __future__ import annotations

import json
from typing import Any

import click

__all__ = ["bench"]


@click.command()
@click.option("-b", "--broker", default=None, help="Broker URL (default: local RabbitMQ).")
@click.option(
    "-n",
    "--tasks",
    type=int,
    default=100_000,
    show_default=True,
    help="Tasks to publish and drain.",
)
@click.option(
    "--latency",
    type=int,
    default=1_000,
    show_default=True,
    help="Sequential delay().get() round trips.",
)
@click.option(
    "--body-size", type=int, default=0, show_default=True, help="Bytes of payload per task."
)
@click.option("--prefetch-multiplier", type=int, default=4, show_default=True)
@click.option("--json", "json_file", default=None, help="Write every number to this file.")
@click.pass_context
def bench(
    ctx: click.Context,
    broker: str | None,
    tasks: int,
    latency: int,
    body_size: int,
    prefetch_multiplier: int,
    json_file: str | None,
) -> None:
    """Measure a worker: publish rate, drain rate and round-trip latency."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    from rich.table import Table

    from celeriac.bench.engine import BenchConfig, broker_answers, run_bench
    from celeriac.urls import mask_url

    console = Console()
    broker = broker or (ctx.obj or {}).get("broker")
    note = ""
    if broker is None:
        from celeriac.bench.engine import LOCAL_RABBITMQ

        if broker_answers():
            broker = LOCAL_RABBITMQ
        else:
            note = (
                "no broker answers on localhost:5672: running on the embedded in-process "
                "broker (memory://)"
            )
            broker = "memory://"
    config = BenchConfig(
        tasks=tasks,
        latency=latency,
        body_size=body_size,
        prefetch_multiplier=prefetch_multiplier,
        broker=broker,
        note=note,
    )
    from celeriac.bench.engine import environment

    env = environment()
    console.print(
        f"[bold]celeriac bench[/] {env['celeriac']} · speedups: {env['speedups']} · "
        f"Python {env['python']} · {env['cores']} cores · {env['cpu']}"
    )
    if note:
        console.print(f"[yellow]{note}[/]")
    console.print(
        f"broker: {mask_url(broker)} · tasks: {tasks} · latency round trips: {latency} · "
        f"prefetch multiplier: {prefetch_multiplier} · pool: solo"
    )

    with Progress(
        TextColumn("{task.description:>8}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        console=console,
        transient=False,
    ) as bar:
        ids: dict[str, Any] = {}

        def report(phase: str, done: int, total: int) -> None:
            if phase not in ids:
                ids[phase] = bar.add_task(phase, total=total, rate="")
            bar.update(ids[phase], completed=done)

        result = run_bench(config, report)

    table = Table(title="celeriac bench")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("publish rate", f"{result.publish_rate:,.0f} tasks/s")
    table.add_row("drain rate (solo)", f"{result.drain_rate:,.0f} tasks/s")
    for key, value in result.latency_ms.items():
        table.add_row(f"latency {key}", f"{value:.3f} ms")
    table.add_row("tasks executed", f"{result.tasks_executed:,}")
    table.add_row("broker", str(result.environment.get("broker")))
    console.print(table)
    if json_file:
        with open(json_file, "w", encoding="utf-8") as fh:
            json.dump(result.as_dict(), fh, indent=2)
        console.print(f"wrote {json_file}")
