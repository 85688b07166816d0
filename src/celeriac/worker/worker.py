"""The worker (``WorkController``): a blueprint of steps around a consumer and a pool."""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from celeriac import signals
from celeriac.bootsteps import Blueprint, Step
from celeriac.worker import steps as worker_steps
from celeriac.worker.state import WorkerState

if TYPE_CHECKING:
    from celeriac.app import Celery
    from celeriac.pool.base import Pool
    from celeriac.worker.consumer.consumer import Consumer
    from celeriac.worker.timer import Timer

__all__ = ["WorkController", "WorkerBlueprint", "default_hostname"]

logger = logging.getLogger("celeriac.worker")


class WorkerBlueprint(Blueprint):
    name = "worker"
    default_steps: ClassVar[tuple[type[Step], ...]] = (
        worker_steps.Timer,
        worker_steps.Pool,
        worker_steps.Consumer,
    )


def default_hostname(name: str | None = None) -> str:
    """Expand a node name as Celery does: ``%h`` host, ``%n`` short name, ``%d`` domain."""
    host = socket.gethostname()
    if not name:
        return f"celeriac@{host}"
    short, _, domain = host.partition(".")
    name = name.replace("%h", host).replace("%n", short).replace("%d", domain)
    name = name.replace("%p", str(os.getpid()))
    return name if "@" in name else f"{name}@{host}"


class WorkController:
    """A worker: start it with :meth:`start` (blocks), stop it from anywhere with :meth:`stop`.

    Args:
        app: the application whose tasks it runs.
        hostname: the node name (``name@host``).
        pool: pool name (``solo``, ``threads``, ``prefork``).
        concurrency: number of parallel tasks (default: CPU count; 1 for solo).
        queues: queues to consume (default: ``task_default_queue``).
        prefetch_multiplier: ``worker_prefetch_multiplier`` override.
    """

    timer: Timer
    pool: Pool
    consumer: Consumer

    def __init__(
        self,
        app: Celery,
        hostname: str | None = None,
        pool: str = "solo",
        concurrency: int | None = None,
        queues: Sequence[str] | None = None,
        prefetch_multiplier: int | None = None,
        max_tasks_per_child: int | None = None,
        max_memory_per_child: int | None = None,
        time_limit: float | None = None,
        soft_time_limit: float | None = None,
        fair: bool = False,
        autoscale: tuple[int, int] | None = None,
        start_method: str | None = None,
        **_: Any,
    ) -> None:
        self.app = app
        conf = app.conf
        self.hostname = default_hostname(hostname or conf.worker_hostname)
        self.pool_name = pool
        if pool == "solo":
            concurrency = 1
        self.concurrency = concurrency or conf.worker_concurrency or os.cpu_count() or 1
        self.queues = list(queues or [conf.task_default_queue])
        multiplier = (
            conf.worker_prefetch_multiplier if prefetch_multiplier is None else prefetch_multiplier
        )
        if autoscale:
            # prefetch follows the most processes the pool may have, as in Celery
            self.concurrency = max(autoscale)
        self.prefetch_count = int(multiplier) * self.concurrency
        self.pool_options: dict[str, Any] = {
            "max_tasks_per_child": max_tasks_per_child or conf.worker_max_tasks_per_child,
            "max_memory_per_child": max_memory_per_child or conf.worker_max_memory_per_child,
            "time_limit": time_limit if time_limit is not None else conf.task_time_limit,
            "soft_time_limit": (
                soft_time_limit if soft_time_limit is not None else conf.task_soft_time_limit
            ),
            "fair": fair,
            "autoscale": autoscale,
            "start_method": start_method or conf.worker_start_method,
        }
        self.executor = app.executor
        self.state = WorkerState()
        self.cold_shutdown = False
        self.steps: list[Step] = []
        self._stopped = threading.Event()
        app.loader_import_modules()
        if signals.worker_init.receivers:
            signals.worker_init.send(sender=self)
        self.blueprint = WorkerBlueprint(steps=app.steps["worker"])
        self.blueprint.apply(self)

    def start(self) -> None:
        """Run until stopped; steps are stopped in reverse order on the way out."""
        try:
            self.blueprint.start(self)
        finally:
            self._shutdown()

    def wake_consumer(self) -> None:
        """Make the consumer loop look at its pool now (threads finishing tasks call this)."""
        consumer = getattr(self, "consumer", None)
        if consumer is not None:
            consumer.wake()

    def stop(self) -> None:
        """Ask the worker to stop after the task it is running (warm shutdown)."""
        consumer = getattr(self, "consumer", None)
        if consumer is not None:
            consumer.stop()

    def terminate(self) -> None:
        """Cold shutdown: kill running tasks (SIGQUIT, or a second SIGTERM); tasks with late
        acks go back to the broker."""
        self.cold_shutdown = True
        self.stop()

    def _shutdown(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        if signals.worker_shutdown.receivers:
            signals.worker_shutdown.send(sender=self)
        self.blueprint.stop(self)

    def wait_stopped(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)

    def info(self) -> dict[str, Any]:
        return {
            "hostname": self.hostname,
            "pool": self.pool.info(),
            "prefetch_count": self.consumer.qos.value,
        }
