"""The solo pool: run each task inline in the consumer's thread."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from celeriac.worker.executor import execute_request

if TYPE_CHECKING:
    from celeriac.worker.executor import Executor
    from celeriac.worker.request import Request
    from celeriac.worker.state import WorkerState

__all__ = ["SoloPool"]


class SoloPool:
    """One task at a time, in the thread that consumes; the lowest overhead per task."""

    limit = 1

    def __init__(self, state: WorkerState, executor: Executor | None = None, **_: Any) -> None:
        self.state = state
        self._execute = executor.execute if executor is not None else execute_request

    def start(self) -> None:
        return None

    def stop(self) -> None:
        return None

    def terminate(self) -> None:
        return None

    def apply(self, request: Request) -> None:
        self._execute(request, self.state)

    def filenos(self) -> tuple[int, ...]:
        return ()

    def on_readable(self, fd: int) -> None:
        return None

    def flush(self) -> None:
        return None

    def tick(self) -> float | None:
        return None

    def info(self) -> dict[str, Any]:
        return {
            "implementation": "celeriac.pool.solo:SoloPool",
            "max-concurrency": 1,
            "processes": [os.getpid()],
            "max-tasks-per-child": None,
            "put-guarded-by-semaphore": True,
            "timeouts": [],
        }
