"""The broker interface every transport implements (memory, AMQP, Redis, librabbitmq).

One :class:`Transport` object is one connection with one channel. It is used from the thread
that drains it; :meth:`Transport.ack`, :meth:`Transport.reject`, :meth:`Transport.publish` and
:meth:`Transport.wakeup` may also be called from other threads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

__all__ = ["Delivery", "DeliveryCallback", "QueueInfo", "Transport", "WithConnection"]


class Delivery:
    """One message delivered by the broker.

    Attributes:
        body: the raw (serialized, possibly compressed) body.
        headers: AMQP ``application_headers`` (Celery's task headers), or ``None``.
        properties: the other message properties: ``content_type``, ``content_encoding``,
            ``correlation_id``, ``reply_to``, ``priority``, ``delivery_mode``, ``expiration``...
        delivery_info: ``exchange``, ``routing_key``, ``redelivered``, ``consumer_tag``.
        delivery_tag: the tag to ack or reject with, unique within the connection.
    """

    __slots__ = ("body", "delivery_info", "delivery_tag", "headers", "properties")

    def __init__(
        self,
        body: bytes,
        headers: dict[str, Any] | None,
        properties: dict[str, Any],
        delivery_info: dict[str, Any],
        delivery_tag: int,
    ) -> None:
        self.body = body
        self.headers = headers
        self.properties = properties
        self.delivery_info = delivery_info
        self.delivery_tag = delivery_tag

    def __repr__(self) -> str:
        return (
            f"<Delivery tag={self.delivery_tag} rk={self.delivery_info.get('routing_key')!r} "
            f"{len(self.body)} bytes>"
        )


DeliveryCallback = Callable[[Delivery], None]


@dataclass(frozen=True)
class QueueInfo:
    """What ``queue.declare`` answers."""

    name: str
    message_count: int
    consumer_count: int


@runtime_checkable
class Transport(Protocol):
    """A connection to a broker, with AMQP 0-9-1 semantics."""

    url: str

    @property
    def connected(self) -> bool: ...

    def connect(self) -> None:
        """Open the connection (idempotent)."""

    def close(self) -> None:
        """Close it; the broker requeues every delivery not yet acked."""

    def declare_exchange(
        self,
        name: str,
        type: str = "direct",
        durable: bool = True,
        auto_delete: bool = False,
        arguments: Mapping[str, Any] | None = None,
    ) -> None: ...

    def declare_queue(
        self,
        name: str,
        durable: bool = True,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: Mapping[str, Any] | None = None,
        passive: bool = False,
    ) -> QueueInfo: ...

    def bind_queue(
        self,
        queue: str,
        exchange: str,
        routing_key: str,
        arguments: Mapping[str, Any] | None = None,
    ) -> None: ...

    def purge_queue(self, name: str) -> int: ...

    def delete_queue(self, name: str, if_unused: bool = False, if_empty: bool = False) -> int: ...

    def delete_exchange(self, name: str) -> None: ...

    def publish(
        self,
        body: bytes,
        exchange: str,
        routing_key: str,
        headers: Mapping[str, Any] | None = None,
        properties: Mapping[str, Any] | None = None,
        mandatory: bool = False,
    ) -> None:
        """Publish one message; ``exchange=''`` routes straight to the queue ``routing_key``."""

    def qos(self, prefetch_count: int, global_: bool = False) -> None:
        """Limit unacked deliveries to ``prefetch_count`` (0 = unlimited)."""

    def consume(
        self,
        queue: str,
        callback: DeliveryCallback,
        no_ack: bool = False,
        consumer_tag: str | None = None,
    ) -> str:
        """Start a consumer; deliveries reach ``callback`` from :meth:`drain_events`."""

    def cancel(self, consumer_tag: str) -> None: ...

    def drain_events(self, timeout: float | None = None) -> int:
        """Dispatch ready deliveries to their callbacks, waiting up to ``timeout`` seconds
        (``None`` = forever) for the first; return how many were dispatched (0 on timeout)."""

    def filenos(self) -> tuple[int, ...]:
        """Descriptors that are readable whenever ``drain_events(0)`` has work.

        Work is new bytes from the broker, deliveries another thread already read and
        buffered, or a :meth:`wakeup` call. The consumer loop waits on these (with its pool's)
        and then calls ``drain_events(0)``, which never blocks and leaves them unreadable
        once it has dispatched everything. Empty when not connected; ask again after
        :meth:`connect`, since a new connection has new descriptors.
        """

    def wakeup(self) -> None:
        """Make a blocked :meth:`drain_events` in another thread return now."""

    def ack(self, delivery_tag: int, multiple: bool = False) -> None: ...

    def reject(self, delivery_tag: int, requeue: bool = False) -> None: ...

    def get(self, queue: str, no_ack: bool = False) -> Delivery | None:
        """``basic.get``: one message or ``None``."""


class _Connectable(Protocol):
    def connect(self) -> None: ...

    def close(self) -> None: ...


_C = TypeVar("_C", bound=_Connectable)


class WithConnection:
    """``with transport:`` connects on entry and closes on exit (every transport's)."""

    def __enter__(self: _C) -> _C:
        self.connect()
        return self

    def __exit__(self: _Connectable, *exc_info: object) -> None:
        self.close()
