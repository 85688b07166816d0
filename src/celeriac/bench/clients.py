"""The client side of a run: celeriac's or Celery's, sending the same tasks the same way."""

from __future__ import annotations

import contextlib
from typing import Any

from celeriac.bench.apps import MARK, make_celeriac_app, make_celery_app
from celeriac.bench.config import BenchOptions

__all__ = ["BenchClient"]


class BenchClient:
    """Publishes the run's tasks with ``apply_async`` on celeriac's or Celery's app.

    Args:
        kind: ``"celeriac"`` or ``"celery"``.
        opts: the run's options (broker, backend, queue, task kind, publisher confirms).
    """

    def __init__(self, kind: str, opts: BenchOptions) -> None:
        self.kind = kind
        self.opts = opts
        settings: dict[str, Any] = {}
        if opts.confirm:
            settings["broker_transport_options"] = {"confirm_publish": True}
        factory = make_celeriac_app if kind == "celeriac" else make_celery_app
        self.app = factory(opts.broker, opts.backend, opts.queue, opts.acks_late, **settings)
        name, self.args = opts.task.call(opts.payload)
        self.task = self.app.tasks[name]

    def connect(self) -> None:
        """Open the publishing connection now, so the publish clock does not include it."""
        if self.kind == "celeriac":
            self.app.producer_transport()
            return
        with self.app.producer_or_acquire() as producer:
            producer.connection.ensure_connection(max_retries=1)

    def send(self) -> None:
        """Publish one task of the drain phase (no result wanted)."""
        self.task.apply_async(self.args, ignore_result=True)

    def mark(self, path: str) -> None:
        """Publish the task that tells when the worker reached the end of the queue."""
        self.app.tasks[MARK].apply_async((path,), ignore_result=True)

    def round_trip(self, task_id: str, timeout: float) -> None:
        """Send one task and wait for its result."""
        self.task.apply_async(self.args, task_id=task_id).get(timeout=timeout)

    def reply_queue(self) -> str | None:
        """The queue ``rpc://`` results come back on (``None`` for other backends)."""
        if not self.opts.backend.startswith("rpc://"):
            return None
        if self.kind == "celeriac":
            return str(self.app.oid)
        with contextlib.suppress(Exception):  # Celery's naming, best effort
            return str(self.app.backend.binding.name)
        return None

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing is best effort
            self.app.close()
