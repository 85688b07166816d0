"""``celeriac bench`` from options to printed tables; Ctrl-C prints what was measured and
exits 130."""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.console import Console

from celeriac.bench.broker import BrokerInfo
from celeriac.bench.config import BenchOptions
from celeriac.bench.machine import environment
from celeriac.bench.progress import PhaseProgress
from celeriac.bench.report import cpu_table, document, print_header, run_table, write_json
from celeriac.bench.results import RunResult

__all__ = ["INTERRUPTED", "Plan", "execute"]

#: the exit status after Ctrl-C, as a shell reports a process ended by SIGINT
INTERRUPTED = 130


@dataclass
class Plan:
    """What to run: the options and where the results go."""

    opts: BenchOptions
    json_file: str | None = None
    notes: list[str] = field(default_factory=list)


def _run(
    opts: BenchOptions, broker: BrokerInfo, progress: PhaseProgress, result: RunResult
) -> None:
    from celeriac.bench.embedded import run_embedded
    from celeriac.bench.run import run_once

    progress.begin_run("")
    runner = run_embedded if opts.embedded else run_once
    runner(opts, broker, progress, result)


def execute(plan: Plan, broker: BrokerInfo, console: Console) -> int:
    """Run the plan, print the tables, write the files; return the exit status."""
    from celeriac.bench.run import new_result

    opts = plan.opts
    env = environment()
    print_header(console, env, broker, opts, plan.notes)
    result = new_result(opts)
    interrupted = False
    try:
        with PhaseProgress(console) as progress:
            _run(opts, broker, progress, result)
    except KeyboardInterrupt:
        interrupted = True
        console.print(
            f"[bold red]interrupted[/] during {result.phase}: the run's queue and results "
            "are removed; what was measured so far:"
        )
    console.print(run_table(result))
    if result.cpu:
        console.print(cpu_table(result))
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}")
    if plan.json_file:
        doc = document(result, env, broker, opts, plan.notes)
        doc["interrupted"] = interrupted
        write_json(plan.json_file, doc)
        console.print(f"wrote {plan.json_file}")
    return INTERRUPTED if interrupted else 0
