"""The embedded ``memory://`` broker: an in-process, thread-safe broker with AMQP 0-9-1 semantics.

A worker and its clients in one process share a :class:`MemoryBroker` per virtual host, chosen
by the URL: ``memory://``, ``memory:///`` and ``memory://localhost`` are the default host ``/``;
``memory://name`` (or ``memory:///name``) is host ``name``.

Where AMQP would close the channel (unknown delivery tag, passive declare of a missing queue,
publish to a missing exchange, inequivalent redeclare, reuse of a consumer tag) the call raises
:class:`~celeriac.errors.ChannelError` *and* the channel is closed as RabbitMQ does: its unacked
deliveries are requeued, its consumers cancelled, ``connected`` turns false and every further call
raises until :meth:`MemoryTransport.connect` opens a new channel (tags restart at 1). Exclusive
queues belong to the connection and survive that; :meth:`MemoryTransport.close` deletes them.

A ``mandatory`` publish that no queue takes raises ``ChannelError`` (``312 NO_ROUTE``) in place
of AMQP's asynchronous ``basic.return``; the channel stays open. Without ``mandatory`` an
unroutable message is dropped, as AMQP does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

from celeriac.errors import ConfigurationError, ConnectionError
from celeriac.transports._memory_broker import MemoryBroker
from celeriac.transports._memory_channel import Channel, Notifier
from celeriac.transports._memory_vhost import DEFAULT_VHOST
from celeriac.transports.base import Delivery, DeliveryCallback, QueueInfo, WithConnection

__all__ = ["DEFAULT_VHOST", "MemoryBroker", "MemoryTransport", "vhost_from_url"]


def vhost_from_url(url: str) -> str:
    """Return the virtual host a ``memory://`` URL names (``"/"`` for the default one).

    Raises:
        ConfigurationError: the URL is not a ``memory://`` URL.
    """
    parts = urlsplit(url)
    if parts.scheme != "memory":
        raise ConfigurationError(f"cannot use {url!r} for the memory transport: want memory://")
    path = unquote(parts.path.strip("/"))
    if path:
        return path
    host = parts.netloc.rpartition("@")[2]
    return DEFAULT_VHOST if host in ("", "localhost", "127.0.0.1") else unquote(host)


class MemoryTransport(WithConnection):
    """A connection with one channel to the embedded broker of the URL's virtual host.

    Args:
        url: ``memory://`` URL; see the module docstring for how it names the virtual host.
        **options: accepted and kept on :attr:`options` so that settings meant for network
            transports (heartbeat, timeouts) do not break an embedded setup.
    """

    def __init__(self, url: str = "memory://", **options: Any) -> None:
        self.url = url
        self.options = options
        self.vhost = vhost_from_url(url)
        self._broker: MemoryBroker | None = None
        self._ch: Channel | None = None

    def __repr__(self) -> str:
        state = "connected" if self.connected else "not connected"
        return f"<MemoryTransport {self.url!r} vhost={self.vhost!r} {state}>"

    @property
    def broker(self) -> MemoryBroker:
        """The broker of this transport's virtual host (looked up now if not connected)."""
        return self._broker if self._broker is not None else MemoryBroker.get(self.vhost)

    @property
    def connected(self) -> bool:
        return self._ch is not None and self._ch.open

    def connect(self) -> None:
        """Open the connection, or a new channel after the broker closed the old one."""
        if self.connected:
            return
        if self._broker is None or self._ch is None or self._ch.closed_by is ConnectionError:
            # Looked up here, not in __init__, so a MemoryBroker.reset_all() in between counts.
            self._broker = MemoryBroker.get(self.vhost)
        old, self._ch = self._ch, self._broker.open_channel(self)
        if old is not None and old.notifier is not None:
            notifier, old.notifier = old.notifier, None
            self._broker.attach_notifier(self._ch, notifier)

    def close(self) -> None:
        """Close the connection: unacked deliveries go back to their queues (redelivered),
        consumers are cancelled and this connection's exclusive queues are deleted."""
        ch, self._ch = self._ch, None
        if ch is not None and self._broker is not None:
            self._broker.close_connection(ch)
            self._broker.detach_notifier(ch)

    def _channel(self, operation: str) -> tuple[MemoryBroker, Channel]:
        ch, broker = self._ch, self._broker
        if ch is None or broker is None:
            raise ConnectionError(f"cannot {operation}: {self.url} is not connected")
        return broker, ch

    def declare_exchange(
        self,
        name: str,
        type: str = "direct",
        durable: bool = True,
        auto_delete: bool = False,
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        broker, ch = self._channel(f"declare exchange {name!r}")
        broker.declare_exchange(ch, name, type, durable, auto_delete, arguments)

    def declare_queue(
        self,
        name: str,
        durable: bool = True,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: Mapping[str, Any] | None = None,
        passive: bool = False,
    ) -> QueueInfo:
        broker, ch = self._channel(f"declare queue {name!r}")
        return broker.declare_queue(ch, name, durable, exclusive, auto_delete, arguments, passive)

    def bind_queue(
        self,
        queue: str,
        exchange: str,
        routing_key: str,
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        broker, ch = self._channel(f"bind queue {queue!r}")
        broker.bind_queue(ch, queue, exchange, routing_key, arguments)

    def unbind_queue(
        self,
        queue: str,
        exchange: str,
        routing_key: str,
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """Remove one binding (a binding that does not exist is not an error)."""
        broker, ch = self._channel(f"unbind queue {queue!r}")
        broker.bind_queue(ch, queue, exchange, routing_key, arguments, unbind=True)

    def purge_queue(self, name: str) -> int:
        broker, ch = self._channel(f"purge queue {name!r}")
        return broker.purge_queue(ch, name)

    def delete_queue(self, name: str, if_unused: bool = False, if_empty: bool = False) -> int:
        broker, ch = self._channel(f"delete queue {name!r}")
        return broker.delete_queue(ch, name, if_unused, if_empty)

    def delete_exchange(self, name: str) -> None:
        broker, ch = self._channel(f"delete exchange {name!r}")
        broker.delete_exchange(ch, name)

    def publish(
        self,
        body: bytes,
        exchange: str,
        routing_key: str,
        headers: Mapping[str, Any] | None = None,
        properties: Mapping[str, Any] | None = None,
        mandatory: bool = False,
    ) -> None:
        """Publish one message; see the module docstring for ``mandatory``."""
        broker, ch = self._channel(f"publish to exchange {exchange!r}")
        if type(body) is not bytes:
            body = bytes(body)
        broker.publish(ch, body, exchange, routing_key, headers, properties, mandatory)

    def qos(self, prefetch_count: int, global_: bool = False) -> None:
        """Limit this channel's unacked deliveries to ``prefetch_count`` (0 = unlimited).

        The limit is per channel whatever ``global_`` says: with one channel per transport,
        that is the guarantee callers rely on.
        """
        broker, ch = self._channel("set qos")
        broker.qos(ch, prefetch_count)

    def consume(
        self,
        queue: str,
        callback: DeliveryCallback,
        no_ack: bool = False,
        consumer_tag: str | None = None,
    ) -> str:
        broker, ch = self._channel(f"consume from queue {queue!r}")
        return broker.consume(ch, queue, callback, no_ack, consumer_tag)

    def cancel(self, consumer_tag: str) -> None:
        broker, ch = self._channel(f"cancel consumer {consumer_tag!r}")
        broker.cancel(ch, consumer_tag)

    def drain_events(self, timeout: float | None = None) -> int:
        """Dispatch ready deliveries to their callbacks, waiting up to ``timeout`` seconds for
        the first; return how many were dispatched (0 on timeout or after :meth:`wakeup`).

        An exception from a callback propagates; that delivery stays unacked and the ones not
        yet dispatched wait for the next call.

        Raises:
            ConnectionError: the connection was closed, maybe by another thread meanwhile.
            ChannelError: the broker closed the channel.
        """
        broker, ch = self._channel("drain events")
        return broker.drain(ch, timeout)

    def filenos(self) -> tuple[int, ...]:
        """The read end of this connection's notification pipe (``()`` when not connected).

        It is readable while :meth:`drain_events` has work: a delivery ready for this
        connection's consumers, a :meth:`wakeup`, or a channel the broker closed (the drain
        raises why). Each drain empties it. The pipe lives until :meth:`close`, across
        channels reopened by :meth:`connect`; ask again after a close.
        """
        ch, broker = self._ch, self._broker
        if ch is None or broker is None:
            return ()
        notifier = ch.notifier
        if notifier is None:
            notifier = Notifier()
            broker.attach_notifier(ch, notifier)
        return (notifier.fileno(),)

    def wakeup(self) -> None:
        """Make a blocked :meth:`drain_events` return 0 now (or the next one, if none is)."""
        ch, broker = self._ch, self._broker
        if ch is not None and broker is not None:
            broker.wakeup(ch)

    def ack(self, delivery_tag: int, multiple: bool = False) -> None:
        broker, ch = self._channel(f"ack delivery tag {delivery_tag}")
        broker.ack(ch, delivery_tag, multiple)

    def reject(self, delivery_tag: int, requeue: bool = False) -> None:
        broker, ch = self._channel(f"reject delivery tag {delivery_tag}")
        broker.reject(ch, delivery_tag, requeue)

    def get(self, queue: str, no_ack: bool = False) -> Delivery | None:
        broker, ch = self._channel(f"get from queue {queue!r}")
        return broker.basic_get(ch, queue, no_ack)
