"""The consumer: its blueprint (connection, tasks, user steps) and the event loop."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any, ClassVar

from celeriac import signals
from celeriac.bootsteps import Blueprint, Step
from celeriac.errors import TransportError
from celeriac.worker.consumer.connection import Connection
from celeriac.worker.consumer.loop import Waker, run_loop
from celeriac.worker.consumer.tasks import Tasks

if TYPE_CHECKING:
    from celeriac._speedups_py.consumer import AckBatcher
    from celeriac.transports.base import Transport
    from celeriac.worker.worker import WorkController

__all__ = ["Consumer", "ConsumerBlueprint", "QoS"]

logger = logging.getLogger("celeriac.worker.consumer")

# what a lost or refused broker connection raises; the consumer reconnects on these
RECOVERABLE = (TransportError, OSError)
# reconnect backoff: 0.1 s doubling up to this many seconds
MAX_BACKOFF = 5.0


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
        self._global = False

    def apply(self, transport: Transport) -> None:
        """Set the prefetch on a (new) connection; held tasks do not survive a reconnect."""
        self._transport = transport
        self._applied = None
        self.value = self.initial
        # RabbitMQ 3.3-3.x reads global=False as per-consumer; kombu's rule, §2.2
        rule = getattr(transport, "qos_global_default", None)
        self._global = bool(rule()) if callable(rule) else False
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
        transport.qos(count, self._global)
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
        self.acks: AckBatcher | None = None
        self._stop_requested = threading.Event()
        self.ready = threading.Event()
        self.reconnects = 0
        self.waker = Waker()
        self.should_stop_now = self._stop_requested.is_set
        self.steps: list[Step] = []
        self.blueprint = ConsumerBlueprint(steps=worker.app.steps["consumer"])
        self.blueprint.apply(self)

    @property
    def should_stop(self) -> bool:
        return self._stop_requested.is_set()

    def start(self) -> None:
        """Start the steps, then loop until :meth:`stop` is called.

        A lost broker connection restarts the steps (reconnect, declare, qos, consume) with
        backoff; what was delivered on the old connection and not acked is the broker's again.
        """
        failures = 0
        while not self.should_stop:
            try:
                self.blueprint.start(self)
                failures = 0
                if not self.ready.is_set():
                    self.ready.set()
                    if signals.worker_ready.receivers:
                        signals.worker_ready.send(sender=self)
                self.loop()
                return
            except RECOVERABLE as exc:
                if self.should_stop:
                    return
                failures += 1
                self._give_up_unless_retrying(exc, failures)
                delay = min(MAX_BACKOFF, 0.1 * 2 ** (failures - 1))
                logger.error(
                    "consumer: cannot reach the broker (%s: %s); retrying in %.1fs (attempt %d)",
                    type(exc).__name__,
                    exc,
                    delay,
                    failures,
                )
                self.blueprint.stop(self)
                self._stop_requested.wait(delay)
                self.reconnects += 1

    def _give_up_unless_retrying(self, exc: BaseException, failures: int) -> None:
        conf = self.app.conf
        started = self.ready.is_set()
        retry = (
            conf.broker_connection_retry if started else (conf.broker_connection_retry_on_startup)
        )
        limit = conf.broker_connection_max_retries
        if not retry or (limit and failures > int(limit)):
            logger.critical(
                "consumer: giving up on the broker after %d attempts: %s", failures, exc
            )
            raise exc

    def loop(self) -> None:
        run_loop(self)

    def wake(self) -> None:
        """Make the loop look at its pool and timer now (safe from any thread)."""
        self.waker.wake()

    def stop(self) -> None:
        """Ask the loop to end (safe from any thread or a signal handler)."""
        self._stop_requested.set()
        self.waker.wake()
        transport = self.transport
        if transport is not None:
            transport.wakeup()

    def shutdown(self, cold: bool = False) -> None:
        """Stop consuming, let the pool finish (warm) or kill it (cold), then settle and close.

        The order matters: consumers are cancelled first so nothing new arrives; running tasks
        finish and their acks reach the ack batcher; the Tasks step flushes those acks; the
        connection closes last, and the broker takes back every delivery not yet started.
        """
        for step in self.steps:
            cancel = getattr(step, "cancel_consumers", None)
            if cancel is not None:
                cancel(self)
        pool = self.pool
        if cold:
            pool.terminate()
        else:
            timeout = float(self.app.conf.worker_soft_shutdown_timeout or 0)
            guard = threading.Timer(timeout, pool.terminate) if timeout > 0 else None
            if guard is not None:
                guard.daemon = True
                guard.start()
            try:
                pool.stop()
            finally:
                if guard is not None:
                    guard.cancel()
        pool.tick()  # decisions the pool recorded while stopping (threads) reach the acks
        self.blueprint.stop(self)
        self.waker.close()

    def info(self) -> dict[str, Any]:
        return {"prefetch_count": self.qos.value}
