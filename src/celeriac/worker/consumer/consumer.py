"""The consumer: its blueprint (connection, tasks, user steps) and the event loop."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any, ClassVar

from celeriac import signals
from celeriac.bootsteps import Blueprint, Step
from celeriac.worker.consumer.connection import Connection
from celeriac.worker.consumer.tasks import Tasks

if TYPE_CHECKING:
    from celeriac.transports.base import Transport
    from celeriac.worker.worker import WorkController

__all__ = ["Consumer", "ConsumerBlueprint", "QoS"]

logger = logging.getLogger("celeriac.worker.consumer")

# the longest the loop sleeps in the broker before looking at the timer and stop flag again
MAX_WAIT = 1.0


class ConsumerBlueprint(Blueprint):
    name = "consumer"
    default_steps: ClassVar[tuple[type[Step], ...]] = (Connection, Tasks)


class QoS:
    """The prefetch count: ``multiplier x concurrency``, raised while ETA tasks are held."""

    def __init__(self, initial: int) -> None:
        self.initial = initial
        self.value = initial
        self._applied: int | None = None
        self._transport: Transport | None = None

    def apply(self, transport: Transport) -> None:
        self._transport = transport
        self._applied = None
        self.update()

    def increment(self) -> None:
        if self.initial:
            self.value += 1
            self.update()

    def decrement(self) -> None:
        if self.initial:
            self.value = max(self.initial, self.value - 1)
            self.update()

    def update(self) -> None:
        transport = self._transport
        if transport is None or self._applied == self.value:
            return
        # AMQP's prefetch_count is 16 bits; above that the limit is simply lifted
        count = self.value if self.value <= 0xFFFF else 0
        transport.qos(count)
        self._applied = self.value


class Consumer:
    """Receives deliveries and runs the loop; lives in the worker's main thread."""

    def __init__(self, worker: WorkController) -> None:
        self.worker = worker
        self.app = worker.app
        self.hostname = worker.hostname
        self.pool = worker.pool
        self.timer = worker.timer
        self.state = worker.state
        self.queues = worker.queues
        self.qos = QoS(worker.prefetch_count)
        self.transport: Transport | None = None
        self.should_stop = False
        self.ready = threading.Event()
        self.steps: list[Step] = []
        self.blueprint = ConsumerBlueprint(steps=worker.app.steps["consumer"])
        self.blueprint.apply(self)

    def start(self) -> None:
        """Start the steps, then loop until :meth:`stop` is called."""
        self.blueprint.start(self)
        self.ready.set()
        if signals.worker_ready.receivers:
            signals.worker_ready.send(sender=self)
        self.loop()

    def loop(self) -> None:
        transport = self.transport
        assert transport is not None
        drain = transport.drain_events
        run_due = self.timer.run_due
        while not self.should_stop:
            wait = run_due()
            drain(MAX_WAIT if wait is None else min(wait, MAX_WAIT))

    def stop(self) -> None:
        """Ask the loop to end (safe from any thread or a signal handler)."""
        self.should_stop = True
        transport = self.transport
        if transport is not None:
            transport.wakeup()

    def shutdown(self) -> None:
        self.blueprint.stop(self)

    def info(self) -> dict[str, Any]:
        return {"prefetch_count": self.qos.value}
