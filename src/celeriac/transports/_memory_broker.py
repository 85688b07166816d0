"""The process-wide embedded brokers, one :class:`MemoryBroker` per virtual host."""

from __future__ import annotations

import threading
from typing import ClassVar

from celeriac.errors import ConnectionError
from celeriac.transports._memory_basic import BasicMethods
from celeriac.transports._memory_channel import Channel
from celeriac.transports._memory_declare import Declarations
from celeriac.transports._memory_vhost import DEFAULT_VHOST

__all__ = ["MemoryBroker"]


class MemoryBroker(Declarations, BasicMethods):
    """The state of one virtual host: exchanges, queues, bindings and open channels.

    Get one with :meth:`get`; :class:`MemoryTransport` does. The AMQP methods take the calling
    transport's channel and are meant to be used through the transport. Every method takes the
    one lock, and no callback ever runs under it.
    """

    _registry: ClassVar[dict[str, MemoryBroker]] = {}
    _registry_lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def get(cls, name: str = DEFAULT_VHOST) -> MemoryBroker:
        """Return the process-wide broker of virtual host ``name`` (``""`` means ``"/"``)."""
        name = name or DEFAULT_VHOST
        with cls._registry_lock:
            broker = cls._registry.get(name)
            if broker is None:
                broker = cls._registry[name] = cls(name)
            return broker

    @classmethod
    def reset_all(cls) -> None:
        """Forget every virtual host; open transports see their connection closed (for tests)."""
        with cls._registry_lock:
            brokers = list(cls._registry.values())
            cls._registry.clear()
        for broker in brokers:
            with broker.lock:
                for ch in list(broker._channels):
                    broker._close_channel(ch, ConnectionError, "the memory broker was reset")

    def queue_names(self) -> list[str]:
        """Return the names of the declared queues."""
        with self.lock:
            return list(self._queues)

    def message_count(self, queue: str) -> int:
        """Return how many messages wait in ``queue`` (not counting unacked ones).

        Raises:
            KeyError: there is no such queue.
        """
        with self.lock:
            self._expire_due()
            return self._queues[queue].size

    def queue_depth(self, queue: str) -> int:
        """Return the messages of ``queue`` not yet settled: waiting, or delivered and unacked.

        Meant for tests ("nothing left behind"); it walks every open channel's deliveries.

        Raises:
            KeyError: there is no such queue.
        """
        with self.lock:
            self._expire_due()
            q = self._queues[queue]
            depth = q.size
            for ch in self._channels:
                depth += sum(1 for owner, _ in ch.unacked.values() if owner is q)
                depth += sum(1 for c, _ in ch.ready if c.queue is q and not c.no_ack)
            return depth

    def open_channel(self, owner: object) -> Channel:
        with self.lock:
            ch = Channel(self.lock, owner)
            self._channels[ch] = None
            return ch

    def close_connection(self, ch: Channel) -> None:
        """Close ``ch`` as its connection goes, deleting the connection's exclusive queues."""
        with self.lock:
            self._close_channel(ch, ConnectionError, "the connection was closed")
            for q in [q for q in self._queues.values() if q.owner is ch.owner]:
                self._delete_queue(q)
