"""Consumer step: declare the task queues, set prefetch, and start consuming."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from celeriac import serialization
from celeriac._accel import consumer as consumer_impl
from celeriac._accel import message as message_impl
from celeriac.bootsteps import StartStopStep
from celeriac.worker.consumer.connection import Connection
from celeriac.worker.strategy import Strategy

if TYPE_CHECKING:
    from celeriac.transports.base import Transport
    from celeriac.worker.consumer.consumer import Consumer

__all__ = ["Tasks"]

logger = logging.getLogger("celeriac.worker.consumer")


class Tasks(StartStopStep):
    """Consumes every queue of the worker with a :class:`Strategy` as the callback."""

    label = "Tasks"
    requires = (Connection,)

    def __init__(self, parent: Consumer, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.consumer_tags: list[str] = []
        self.strategy: Strategy | None = None
        self.acks: consumer_impl.AckBatcher | None = None
        self.gate: _Gate | None = None

    def start(self, parent: Consumer) -> None:
        transport = parent.transport
        assert transport is not None, "the Connection step starts before Tasks"
        app = parent.app
        declared: set[str] = set()
        for queue in parent.queues:
            app.declare_queue(transport, queue, declared)
        parent.qos.apply(transport)
        decoder = message_impl.MessageDecoder(
            _body_loader(serialization.accept_content(app.conf.accept_content)),
            app.timezone,
            app.conf.worker_max_message_size,
        )
        # acks are coalesced into multiple-acks; the loop flushes them before it waits
        gate = self.gate = _Gate(transport)
        acks = consumer_impl.AckBatcher(gate.ack, gate.reject)
        self.acks = parent.acks = acks
        strategy = Strategy(
            app,
            decoder,
            parent.pool,
            parent.timer,
            parent.state,
            parent.hostname,
            delivered=acks.delivered,
            ack=acks.ack,
            reject=acks.reject,
            hold=parent.qos.increment,
            release=parent.qos.decrement,
            redelivery_after=getattr(transport, "visibility_timeout", None),
        )
        self.strategy = strategy
        self.consumer_tags = [transport.consume(queue, strategy) for queue in parent.queues]
        logger.info("consuming from %s", ", ".join(parent.queues))

    def cancel_consumers(self, parent: Consumer) -> None:
        """Stop deliveries (warm shutdown); unacked ones stay the worker's until it closes."""
        transport = parent.transport
        tags, self.consumer_tags = self.consumer_tags, []
        if transport is None or not transport.connected:
            return
        for tag in tags:
            try:
                transport.cancel(tag)
            except Exception as exc:  # the connection may already be gone
                logger.debug("cancel of consumer %s failed: %r", tag, exc)

    def stop(self, parent: Consumer) -> None:
        self.cancel_consumers(parent)
        transport = parent.transport
        if self.strategy is not None:
            dropped = self.strategy.discard_held()
            if dropped:
                logger.info("gave back %d held ETA/rate-limited tasks to the broker", dropped)
            self.strategy = None
        acks, self.acks = self.acks, None
        parent.acks = None
        gate, self.gate = self.gate, None
        if transport is not None and transport.connected and acks is not None:
            try:
                acks.flush()  # what ran is acked; what did not start goes back on close
            except Exception as exc:
                logger.warning(
                    "could not send the last acks (%r); the broker will redeliver those tasks", exc
                )
        if gate is not None:
            # Tasks still running (threads, prefork) settle their deliveries through this
            # batcher after the connection is gone; their tags mean nothing on the next one
            # and the broker has taken those messages back, so from now on it sends nothing.
            gate.close()

    def shutdown(self, parent: Consumer) -> None:
        self.stop(parent)


class _Gate:
    """The ack batcher's way to one connection's channel, closed when that connection ends.

    Called once per batch, not per delivery.
    """

    __slots__ = ("_transport",)

    def __init__(self, transport: Transport) -> None:
        self._transport: Transport | None = transport

    def ack(self, tag: int, multiple: bool) -> None:
        transport = self._transport
        if transport is not None:
            transport.ack(tag, multiple)

    def reject(self, tag: int, requeue: bool) -> None:
        transport = self._transport
        if transport is not None:
            transport.reject(tag, requeue)

    def close(self) -> None:
        self._transport = None


def _body_loader(accept: frozenset[str]) -> Any:
    loads = serialization.loads
    decompress = serialization.decompress

    def load_body(
        body: bytes, content_type: str | None, content_encoding: str | None, compression: str | None
    ) -> Any:
        if compression:
            body = decompress(body, compression)
        return loads(body, content_type, content_encoding, accept)

    return load_body
