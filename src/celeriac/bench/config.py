"""Options of one ``celeriac bench`` run, and parsing of what users type for them."""

from __future__ import annotations

import os
import uuid
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from celeriac.bench.apps import CPU, ECHO, NOOP, SLEEP

__all__ = [
    "POOLS",
    "SWEEP_KEYS",
    "BenchOptions",
    "TaskKind",
    "new_queue_name",
    "parse_sweep",
    "parse_task",
    "sweep_grid",
]

POOLS = ("prefork", "threads", "solo")

#: ``--sweep`` axes: what users type, and the option each one sets
SWEEP_KEYS: dict[str, str] = {
    "prefetch": "prefetch_multiplier",
    "pool": "pool",
    "concurrency": "concurrency",
}


@dataclass(frozen=True)
class TaskKind:
    """What each task does: ``noop``, ``sleep`` for ``amount`` ms, ``cpu`` for ``amount`` µs,
    or ``echo`` (returns its payload)."""

    kind: str = "noop"
    amount: float = 0

    def __str__(self) -> str:
        if self.kind in ("sleep", "cpu"):
            return f"{self.kind}:{self.amount:g}"
        return self.kind

    def call(self, payload: str | None) -> tuple[str, tuple[Any, ...]]:
        """The task name and positional arguments of one message."""
        if self.kind == "sleep":
            return SLEEP, ((self.amount, payload) if payload else (self.amount,))
        if self.kind == "cpu":
            return CPU, ((self.amount, payload) if payload else (self.amount,))
        if self.kind == "echo":
            return ECHO, ((payload,) if payload else ())
        return NOOP, ((payload,) if payload else ())


def parse_task(value: str) -> TaskKind:
    """``noop``, ``echo``, ``sleep:MS`` or ``cpu:US`` as a :class:`TaskKind`.

    Raises:
        ValueError: anything else, or a negative or non-numeric amount.
    """
    kind, sep, amount = value.strip().partition(":")
    if kind in ("noop", "echo") and not sep:
        return TaskKind(kind)
    if kind in ("sleep", "cpu") and sep:
        try:
            number = float(amount)
        except ValueError:
            number = -1.0
        if number >= 0:
            return TaskKind(kind, number)
    raise ValueError(f"task kind must be noop, echo, sleep:MS or cpu:US, got {value!r}")


def new_queue_name() -> str:
    """A queue name no other run uses."""
    return f"celeriac.bench.{uuid.uuid4().hex[:10]}"


@dataclass(frozen=True)
class BenchOptions:
    """Everything that shapes a run; :meth:`as_dict` is what the report calls ``config``."""

    broker: str = "memory://"
    result_backend: str | None = None
    tasks: int = 100_000
    body_size: int = 0
    task: TaskKind = field(default_factory=TaskKind)
    pool: str = "prefork"
    concurrency: int | None = None
    prefetch_multiplier: int = 4
    acks_late: bool = False
    fair: bool = False
    max_tasks_per_child: int | None = None
    latency: int = 1_000
    publishers: int = 1
    queue: str = field(default_factory=new_queue_name)
    confirm: bool = False
    worker: str = "celeriac"

    @property
    def embedded(self) -> bool:
        """True on the in-process broker, where the worker runs in this process."""
        return self.broker.startswith("memory://")

    @property
    def workers(self) -> int:
        """The concurrency the worker runs with (``-c``; CPU count when not given; solo: 1)."""
        if self.pool == "solo":
            return 1
        return self.concurrency or os.cpu_count() or 1

    @property
    def backend(self) -> str:
        """The result backend round trips use: ``--result-backend``, else ``rpc://`` on a
        real broker (nothing else to install), an in-process store on the embedded one."""
        if self.result_backend:
            return self.result_backend
        if self.embedded:
            return f"memory://{self.queue}"
        return "rpc://"

    @property
    def payload(self) -> str | None:
        return "x" * self.body_size if self.body_size else None

    def label(self) -> str:
        """A short name for tables: ``prefork -c 2 x4``."""
        text = f"{self.pool} -c {self.workers} x{self.prefetch_multiplier}"
        if self.fair:
            text += " -O fair"
        if self.acks_late:
            text += " acks-late"
        return text

    def worker_flags(self) -> list[str]:
        """The flags the worker command line gets (the same for celeriac and Celery)."""
        return [
            "-P",
            self.pool,
            "-c",
            str(self.workers),
            "--prefetch-multiplier",
            str(self.prefetch_multiplier),
            *self.extra_worker_flags(),
        ]

    def extra_worker_flags(self) -> list[str]:
        """``-O fair`` and ``--max-tasks-per-child N`` when they are set."""
        flags: list[str] = []
        if self.fair:
            flags += ["-O", "fair"]
        if self.max_tasks_per_child:
            flags += ["--max-tasks-per-child", str(self.max_tasks_per_child)]
        return flags

    def with_(self, **changes: Any) -> BenchOptions:
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        from celeriac.urls import mask_url

        data = asdict(self)
        data["task"] = str(self.task)
        data["broker"] = mask_url(self.broker)
        data["result_backend"] = mask_url(self.backend)
        data["concurrency"] = self.workers
        return data


def parse_sweep(specs: tuple[str, ...] | list[str]) -> dict[str, list[Any]]:
    """``["prefetch=1,4", "pool=solo,threads"]`` as ``{"prefetch_multiplier": [1, 4], ...}``.

    Raises:
        ValueError: an unknown axis, a bad value, or an axis given twice.
    """
    axes: dict[str, list[Any]] = {}
    for spec in specs:
        key, sep, values = spec.partition("=")
        key = key.strip()
        if not sep or key not in SWEEP_KEYS:
            raise ValueError(
                f"sweep axis must be one of {', '.join(SWEEP_KEYS)} as NAME=V1,V2, got {spec!r}"
            )
        name = SWEEP_KEYS[key]
        if name in axes:
            raise ValueError(f"sweep axis {key!r} is given twice")
        items = [v.strip() for v in values.split(",") if v.strip()]
        if not items:
            raise ValueError(f"sweep axis {key!r} has no values: {spec!r}")
        if name == "pool":
            bad = [v for v in items if v not in POOLS]
            if bad:
                raise ValueError(f"sweep pool must be one of {', '.join(POOLS)}, got {bad[0]!r}")
            axes[name] = items
            continue
        try:
            numbers = [int(v) for v in items]
        except ValueError:
            raise ValueError(f"sweep {key} values must be integers, got {values!r}") from None
        if any(n < (0 if name == "prefetch_multiplier" else 1) for n in numbers):
            raise ValueError(f"sweep {key} values must be positive, got {values!r}")
        axes[name] = numbers
    return axes


def sweep_grid(base: BenchOptions, axes: dict[str, list[Any]]) -> list[BenchOptions]:
    """Every combination of the axes applied to ``base``, each configuration once (solo
    always runs one task at a time, so its concurrencies collapse into one)."""
    grid = [base]
    for name, values in axes.items():
        grid = [opts.with_(**{name: value}) for opts in grid for value in values]
    seen: set[tuple[str, int, int]] = set()
    unique = []
    for opts in grid:
        key = (opts.pool, opts.workers, opts.prefetch_multiplier)
        if key not in seen:
            seen.add(key)
            unique.append(opts)
    return unique
