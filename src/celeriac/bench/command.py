"""``celeriac bench`` from options to printed tables: one run, a sweep, repeats, a comparison
with Celery, the raw broker limit; Ctrl-C prints what was measured and exits 130."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.console import Console

from celeriac.bench import against as vs
from celeriac.bench import sweep as sw
from celeriac.bench.broker import BrokerInfo
from celeriac.bench.config import BenchOptions, sweep_grid
from celeriac.bench.machine import environment
from celeriac.bench.progress import PhaseProgress
from celeriac.bench.report import cpu_table, document, print_header, run_table, write_json
from celeriac.bench.results import RunResult

__all__ = ["INTERRUPTED", "Plan", "execute"]

#: the exit status after Ctrl-C, as a shell reports a process ended by SIGINT
INTERRUPTED = 130


@dataclass
class Plan:
    """What to run: the base options and the mode around them."""

    opts: BenchOptions
    sweep: dict[str, list[Any]] | None = None
    against: str | None = None
    repeat: int = 1
    raw: bool = False
    json_file: str | None = None
    plot_file: str | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class _State:
    runs: list[RunResult] = field(default_factory=list)
    options: list[BenchOptions] = field(default_factory=list)
    interrupted: bool = False


def _run(
    opts: BenchOptions, broker: BrokerInfo, progress: PhaseProgress, state: _State
) -> RunResult:
    from celeriac.bench.embedded import run_embedded
    from celeriac.bench.run import new_result, run_once

    result = new_result(opts)
    state.runs.append(result)  # before it runs: an interruption keeps what it measured
    state.options.append(opts)
    progress.begin_run("" if progress.keep else f"{opts.worker} {opts.label()}")
    runner = run_embedded if opts.embedded else run_once
    return runner(opts, broker, progress, result)


def _line(console: Console, run: RunResult) -> None:
    latency = run.latency_ms
    p50 = f", p50 {latency['p50']:.2f} ms" if latency else ""
    console.print(
        f"{run.worker:8s} {run.label:28s} publish {run.publish_rate or 0:>9,.0f}/s  "
        f"drain {run.drain_rate or 0:>9,.0f}/s{p50}",
        highlight=False,
    )


def execute(plan: Plan, broker: BrokerInfo, console: Console) -> int:
    """Run the plan, print the tables, write the files; return the exit status."""
    opts = plan.opts
    env = environment()
    kinds = ["celeriac", plan.against] if plan.against else [opts.worker]
    print_header(console, env, broker, opts, plan.notes, kinds)
    state = _State()
    if plan.sweep:
        grid = sweep_grid(opts, plan.sweep)
    else:  # rounds alternate which worker goes first, so drift favours neither
        grid = [
            opts.with_(worker=kind) for order in vs.orders(kinds, plan.repeat) for kind in order
        ]
    single = len(grid) == 1
    try:
        with PhaseProgress(console, keep=single) as progress:
            for config in grid:
                run = _run(config, broker, progress, state)
                if not single:
                    _line(progress.progress.console, run)
            if plan.raw and sw.ranked(state.runs):  # on the fastest celeriac run
                _raw(plan, state, progress)
    except KeyboardInterrupt:
        state.interrupted = True
    return _finish(plan, broker, console, env, state, kinds)


def _raw(plan: Plan, state: _State, progress: PhaseProgress) -> None:
    """The bare client on the same broker, next to the (fastest) drain."""
    from celeriac.bench.raw import run_raw

    celeriac = [r for r in state.runs if r.worker == "celeriac"]
    primary = sw.ranked(celeriac or state.runs)[0]
    opts = state.options[state.runs.index(primary)]
    progress.begin_run("" if progress.keep else "raw")
    primary.phase = "raw"
    primary.raw = run_raw(opts, progress, primary.drain_rate)
    primary.notes += primary.raw.pop("notes", [])
    primary.phase = "done"


def _finish(
    plan: Plan,
    broker: BrokerInfo,
    console: Console,
    env: dict[str, Any],
    state: _State,
    kinds: list[str],
) -> int:
    runs = state.runs
    extra: dict[str, Any] = {}
    primary: RunResult | None = runs[0] if runs else None
    if state.interrupted:
        where = next((r.phase for r in reversed(runs) if not r.complete), "start")
        console.print(
            f"[bold red]interrupted[/] during {where}: the run's queues and results are "
            "removed; what was measured so far:"
        )
    if plan.sweep is not None:
        console.print(sw.sweep_table(runs))
        console.print(sw.verdict(runs))
        order = sw.ranked(runs)
        primary = order[0] if order else primary
        extra["sweep"] = [r.as_dict() for r in runs]
    elif len(runs) > 1 or plan.repeat > 1 or plan.against:
        data = vs.summary(runs, kinds)
        console.print(vs.summary_table(data, kinds, plan.repeat))
        if "ratio" in data["drain_rate"]:
            console.print(vs.ratio_line(data))
        extra.update(summary=data, runs=[r.as_dict() for r in runs], **vs.medians(data, kinds[0]))
        first = [r for r in runs if r.raw] + [r for r in runs if r.worker == kinds[0]]
        primary = first[0] if first else primary
    if primary is not None and (not extra or primary.raw):
        console.print(run_table(primary))
        if primary.cpu:
            console.print(cpu_table(primary))
    for run in runs:
        for note in run.notes:
            console.print(f"[yellow]note:[/] {note}")
    if plan.json_file:
        doc = document(primary, env, broker, plan.opts, plan.notes)
        doc.update(extra)
        doc["interrupted"] = state.interrupted
        write_json(plan.json_file, doc)
        console.print(f"wrote {plan.json_file}")
    if plan.plot_file and runs:
        from celeriac.bench.plot import plot

        plot(runs, plan.plot_file)
        console.print(f"wrote {plan.plot_file}")
    return INTERRUPTED if state.interrupted else 0
