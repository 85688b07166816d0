"""Live progress bars for the phases (rich): count, total and rate so far."""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

__all__ = ["PhaseProgress"]


class PhaseProgress:
    """One bar per phase of the current run; ``self(phase, done, total)`` is a
    :data:`celeriac.bench.phases.Report`.

    Args:
        console: where to draw.
        keep: leave each run's bars on screen (one run); otherwise they are removed when
            the next run begins (sweeps and comparisons print a line per run instead).
    """

    def __init__(self, console: Console, keep: bool = True) -> None:
        self.keep = keep
        self.progress = Progress(
            TextColumn("{task.description:>24}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            console=console,
            transient=not keep,
        )
        self.label = ""
        self._bars: dict[str, Any] = {}
        self._started: dict[str, tuple[float, int]] = {}

    def __enter__(self) -> PhaseProgress:
        self.progress.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.progress.__exit__(exc_type, exc, tb)

    def begin_run(self, label: str) -> None:
        """Start a new run's bars (the previous run's go, unless they are kept)."""
        if not self.keep:
            for bar in self._bars.values():
                self.progress.remove_task(bar)
        self._bars.clear()
        self._started.clear()
        self.label = label

    def __call__(self, phase: str, done: int, total: int) -> None:
        now = time.perf_counter()
        bar = self._bars.get(phase)
        if bar is None:
            name = f"{self.label} {phase}" if self.label else phase
            bar = self._bars[phase] = self.progress.add_task(name, total=total, rate="")
        # the rate counts from the first report after the phase got going (a drain's bar
        # exists while the worker starts; its start-up is not part of the rate)
        first = self._started.setdefault(phase, (now, done)) if done else (now, 0)
        elapsed, counted = now - first[0], done - first[1]
        unit = "round trips/s" if phase == "latency" else "tasks/s"
        rate = f"{counted / elapsed:,.0f} {unit}" if counted > 0 and elapsed > 0 else ""
        self.progress.update(bar, completed=done, total=total, rate=rate)
