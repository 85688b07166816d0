"""The worker's own bootsteps: timer, pool and consumer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from celeriac.bootsteps import StartStopStep
from celeriac.errors import ConfigurationError
from celeriac.worker.consumer.consumer import Consumer as ConsumerObj
from celeriac.worker.timer import Timer as TimerObj

if TYPE_CHECKING:
    from celeriac.worker.worker import WorkController

__all__ = ["Consumer", "Pool", "Timer"]

POOLS = {
    "solo": "celeriac.pool.solo:SoloPool",
    "threads": "celeriac.pool.threads:ThreadsPool",
    "prefork": "celeriac.pool.prefork:PreforkPool",
}


class Timer(StartStopStep):
    """The timer for ETA tasks and housekeeping (run by the consumer loop)."""

    label = "Timer"

    def create(self, parent: WorkController) -> Any:
        parent.timer = TimerObj()
        return None

    def stop(self, parent: WorkController) -> None:
        parent.timer.clear()


class Pool(StartStopStep):
    """The execution pool chosen with ``-P``."""

    label = "Pool"
    requires = (Timer,)

    def create(self, parent: WorkController) -> Any:
        import importlib

        path = POOLS.get(parent.pool_name)
        if path is None:
            raise ConfigurationError(
                f"unknown pool {parent.pool_name!r}; available: {', '.join(sorted(POOLS))}"
            )
        module_name, _, cls_name = path.partition(":")
        cls = getattr(importlib.import_module(module_name), cls_name)
        parent.pool = cls(
            parent.state,
            concurrency=parent.concurrency,
            app=parent.app,
            hostname=parent.hostname,
            wakeup=parent.wake_consumer,
            executor=parent.executor,
            **parent.pool_options,
        )
        self.obj = parent.pool
        return self.obj


class Consumer(StartStopStep):
    """Consumes and runs the loop; its start returns when the worker is asked to stop."""

    label = "Consumer"
    requires = (Pool, Timer)
    last = True

    def create(self, parent: WorkController) -> Any:
        parent.consumer = ConsumerObj(parent)
        self.obj = parent.consumer
        return self.obj

    def stop(self, parent: WorkController) -> None:
        parent.consumer.stop()
        parent.consumer.shutdown(cold=parent.cold_shutdown)

    def terminate(self, parent: WorkController) -> None:
        parent.consumer.stop()
        parent.consumer.shutdown(cold=True)
