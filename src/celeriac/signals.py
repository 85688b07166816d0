"""Signals with Celery's names (task_prerun, task_postrun, worker_ready ...)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

__all__ = [
    "Signal",
    "after_task_publish",
    "before_task_publish",
    "task_failure",
    "task_postrun",
    "task_prerun",
    "task_received",
    "task_rejected",
    "task_retry",
    "task_revoked",
    "task_success",
    "task_unknown",
    "worker_init",
    "worker_process_init",
    "worker_ready",
    "worker_shutdown",
]

logger = logging.getLogger("celeriac.signals")

Receiver = Callable[..., Any]


class Signal:
    """A list of receivers called with ``sender`` and keyword arguments.

    A receiver that raises is logged and the others still run (Celery's ``send`` semantics).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._receivers: list[tuple[Receiver, Any]] = []
        #: True when anyone listens: a plain attribute, checked per task on hot paths
        self.receivers = False
        self._lock = threading.Lock()

    def connect(self, receiver: Receiver | None = None, sender: Any = None, **_: Any) -> Any:
        """Add a receiver; usable as ``@signal.connect`` or ``@signal.connect(sender=...)``."""

        def add(func: Receiver) -> Receiver:
            with self._lock:
                self._receivers = [*self._receivers, (func, sender)]
                self.receivers = True
            return func

        return add(receiver) if receiver is not None else add

    def disconnect(self, receiver: Receiver) -> None:
        with self._lock:
            self._receivers = [r for r in self._receivers if r[0] is not receiver]
            self.receivers = bool(self._receivers)

    def send(self, sender: Any = None, **named: Any) -> list[tuple[Receiver, Any]]:
        responses: list[tuple[Receiver, Any]] = []
        for receiver, wanted in self._receivers:
            if (
                wanted is not None
                and wanted is not sender
                and wanted != getattr(sender, "name", None)
            ):
                continue
            try:
                responses.append((receiver, receiver(signal=self, sender=sender, **named)))
            except Exception as exc:  # receivers must not break the worker
                logger.exception("signal %s receiver %r raised: %r", self.name, receiver, exc)
                responses.append((receiver, exc))
        return responses

    def __repr__(self) -> str:
        return f"<Signal {self.name}>"


before_task_publish = Signal("before_task_publish")
after_task_publish = Signal("after_task_publish")
task_received = Signal("task_received")
task_prerun = Signal("task_prerun")
task_postrun = Signal("task_postrun")
task_success = Signal("task_success")
task_failure = Signal("task_failure")
task_retry = Signal("task_retry")
task_revoked = Signal("task_revoked")
task_rejected = Signal("task_rejected")
task_unknown = Signal("task_unknown")
worker_init = Signal("worker_init")
worker_process_init = Signal("worker_process_init")
worker_ready = Signal("worker_ready")
worker_shutdown = Signal("worker_shutdown")
