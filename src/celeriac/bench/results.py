"""What one run measured, filled in as its phases finish (an interrupted run keeps the rest)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from celeriac.bench.cpu import CpuSplit
from celeriac.bench.phases import Report, percentiles

__all__ = ["PHASES", "RunResult"]

PHASES = ("publish", "drain", "latency")


@dataclass
class RunResult:
    """One run of the three phases with one worker (``celeriac`` or ``celery``)."""

    worker: str
    config: dict[str, Any]
    label: str = ""
    phase: str = "start"
    tasks: int = 0
    publish_seconds: float | None = None
    startup_seconds: float | None = None
    drain_seconds: float | None = None
    latency_samples: list[float] = field(default_factory=list)
    cpu: dict[str, CpuSplit] = field(default_factory=dict)
    worker_peak_rss_bytes: int | None = None
    raw: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    #: phase -> (done, total, seconds and count since its first progress), kept for an
    #: interrupted run
    partial: dict[str, tuple[int, int, float, int]] = field(default_factory=dict)

    def track(self, report: Report) -> Report:
        """``report`` that also keeps each phase's latest count in :attr:`partial`."""
        firsts: dict[str, tuple[float, int]] = {}

        def tracked(phase: str, done: int, total: int) -> None:
            now = time.perf_counter()
            if done:
                first = firsts.setdefault(phase, (now, done))
                self.partial[phase] = (done, total, now - first[0], done - first[1])
            report(phase, done, total)

        return tracked

    def partial_rate(self, phase: str) -> tuple[float, int, int] | None:
        """(rate so far, done, total) of a phase that did not finish, if it got going."""
        if phase not in self.partial:
            return None
        done, total, seconds, counted = self.partial[phase]
        return (counted / seconds if seconds > 0 else 0.0), done, total

    @property
    def publish_rate(self) -> float | None:
        return self.tasks / self.publish_seconds if self.publish_seconds else None

    @property
    def drain_rate(self) -> float | None:
        return self.tasks / self.drain_seconds if self.drain_seconds else None

    @property
    def latency_ms(self) -> dict[str, float]:
        return percentiles(self.latency_samples)

    @property
    def complete(self) -> bool:
        return self.phase == "done"

    def cpu_summary(self) -> dict[str, Any]:
        """CPU seconds per party over the measured phases (worker start-up excluded), each
        also as % of one core, and the same per phase. A party that could not be measured
        is ``None``."""
        summary: dict[str, Any] = {}
        wall = sum(split.wall_s for split in self.cpu.values())
        for party in ("broker", "worker", "client"):
            # the worker exists from the drain on: its share counts over its own phases
            splits = [s for s in self.cpu.values() if getattr(s, f"{party}_s") is not None]
            total = sum(getattr(s, f"{party}_s") for s in splits) if splits else None
            over = sum(s.wall_s for s in splits)
            summary[f"{party}_s"] = total
            summary[f"{party}_pct"] = 100.0 * total / over if total is not None and over else None
        summary["wall_s"] = wall
        summary["phases"] = {
            name: {
                "wall_s": split.wall_s,
                **{
                    f"{party}_{unit}": value
                    for party in ("broker", "worker", "client")
                    for unit, value in (
                        ("s", getattr(split, f"{party}_s")),
                        ("pct", split.percent(getattr(split, f"{party}_s"))),
                    )
                },
            }
            for name, split in self.cpu.items()
        }
        return summary

    def as_dict(self) -> dict[str, Any]:
        return {
            "worker": self.worker,
            "label": self.label,
            "completed": self.complete,
            "interrupted_in": None if self.complete else self.phase,
            "tasks": self.tasks,
            "publish_rate": self.publish_rate,
            "publish_seconds": self.publish_seconds,
            "drain_rate": self.drain_rate,
            "drain_seconds": self.drain_seconds,
            "worker_startup_seconds": self.startup_seconds,
            "latency_ms": self.latency_ms,
            "latency_round_trips": len(self.latency_samples),
            "latency_samples_ms": self.latency_samples,
            "cpu": self.cpu_summary(),
            "worker_peak_rss_bytes": self.worker_peak_rss_bytes,
            "raw": self.raw,
            "notes": self.notes,
            "partial": {
                phase: {"done": done, "total": total, "rate": rate}
                for phase in self.partial
                if not self.complete and (got := self.partial_rate(phase))
                for rate, done, total in [got]
            },
            "config": self.config,
        }
