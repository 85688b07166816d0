"""The AMQP 0-9-1 transport (``amqp://``, ``amqps://``, ``pyamqp://``): celeriac's own client.

One :class:`AMQPTransport` is one connection with one channel (channel 1) that consumes and
publishes. The frame codec is :mod:`celeriac._accel.amqp_codec` (compiled, or its pure twin);
this module holds the socket and the AMQP conversation.

What callers must know:

* **Errors.** When the broker closes the channel (inequivalent redeclare, passive declare of
  a missing queue, unknown delivery tag...) the call raises :class:`~celeriac.errors.ChannelError`
  worded as ``"queue.declare: NOT_FOUND - no queue 'x' in vhost '/' (404)"`` with
  ``reply_code``/``reply_text``; when the connection goes (broker close, socket error, missed
  heartbeats), :class:`~celeriac.errors.ConnectionError`. Either way every later call raises
  until :meth:`AMQPTransport.connect` opens a new channel (or a new connection). Consumers and
  qos belong to the channel: declare, ``qos`` and ``consume`` again after ``connect()``.
* **Delivery tags** carry the channel's generation in their top bits, so a tag from before a
  reconnect is never acked on the new channel: ``ack``/``reject``/``nack`` of such a tag
  raise ``ConnectionError`` (the broker redelivers that message anyway).
* **Blocked connections.** While the broker blocks publishing (``connection.blocked``, e.g. a
  memory alarm) :meth:`AMQPTransport.publish` waits up to ``publish_timeout`` and then raises
  :class:`~celeriac.errors.ConnectionBlocked`; it never hangs.
* **Consumer cancel notifications**: a consumer the broker cancels is forgotten and its tag
  added to :attr:`AMQPTransport.cancelled_by_broker`; ``drain_events`` carries on.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping
from time import monotonic
from typing import Any

from celeriac._accel import amqp_codec as codec
from celeriac.errors import ConnectionError, TransportError
from celeriac.transports._amqp_channel import GENERATION_MASK, TAG_BITS, TAG_MASK
from celeriac.transports._amqp_connection import Connection
from celeriac.transports._amqp_publish import Publishing
from celeriac.transports._amqp_url import (
    BrokerAddress,
    parse_urls,
    product_version,
    qos_global_for,
)
from celeriac.transports.base import Delivery, DeliveryCallback, QueueInfo, WithConnection

__all__ = ["AMQPTransport"]

logger = logging.getLogger("celeriac.transports.amqp")

_CLOSE_TIMEOUT = 1.0
_consumer_numbers = itertools.count(1)


class AMQPTransport(Publishing, WithConnection):
    """A connection to an AMQP 0-9-1 broker (RabbitMQ) with one channel.

    Args:
        url: ``amqp://user:password@host:port/vhost`` (kombu's form: ``//`` or an empty path
            is the vhost ``/``; parts are percent-decoded), ``amqps://`` for TLS, ``pyamqp://``
            as an alias, or a ``;``-separated failover list tried in order (the next reconnect
            starts after the broker last used).
        **options: ``heartbeat`` (120; 0 disables), ``connect_timeout`` (4),
            ``frame_max`` (131072), ``channel_max`` (65535), ``ssl`` (``True`` or a dict like
            Celery's ``broker_use_ssl``), ``confirm_publish`` (False), ``publish_timeout``
            (10), ``rpc_timeout`` (30), ``login_method`` (``PLAIN``/``AMQPLAIN``),
            ``connection_name``. ``None`` means the default; other names are ignored (kept in
            :attr:`options`), so settings meant for other transports do no harm.
    """

    #: a ``;``-separated list of broker URLs is tried in turn (the registry passes it whole)
    supports_failover = True

    def __init__(self, url: str = "amqp://", **options: Any) -> None:
        super().__init__()
        self.url = url
        self.options = options
        self.addresses: list[BrokerAddress]
        self.addresses, self.config, ignored = parse_urls(url, options)
        if ignored:
            logger.debug("amqp transport ignores options %s", ", ".join(sorted(ignored)))
        self.confirm_publish = self.config.confirm_publish
        self._next_address = 0
        self._server_properties: dict[str, Any] = {}

    def __repr__(self) -> str:
        conn = self._conn
        where = conn.address if conn is not None else self.addresses[0]
        return f"<AMQPTransport {where} {'connected' if self.connected else 'not connected'}>"

    # -- connection ------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        conn = self._conn
        return conn is not None and conn.error is None and self._channel_open

    @property
    def server_properties(self) -> dict[str, Any]:
        """What the broker said about itself in ``connection.start`` (last connection)."""
        return self._server_properties

    @property
    def address(self) -> BrokerAddress | None:
        """The broker of the current (or last) connection."""
        conn = self._conn
        return conn.address if conn is not None else None

    @property
    def heartbeat(self) -> int:
        """The negotiated heartbeat in seconds (0: none, or not connected)."""
        conn = self._conn
        return conn.heartbeat if conn is not None else 0

    @property
    def generation(self) -> int:
        """How many times channel 1 was opened before the current one (-1: never)."""
        return self._generation

    @property
    def blocked(self) -> str | None:
        """The broker's reason while it blocks publishing on this connection, else ``None``."""
        return self._blocked

    def server_product_version(self) -> str:
        """The broker's product and version, e.g. ``"RabbitMQ 3.10.8"``."""
        return product_version(self._server_properties)

    def qos_global_default(self) -> bool:
        """The ``global_`` flag for :meth:`qos` that limits the whole channel on this broker.

        kombu 5.6+'s rule: ``True`` for RabbitMQ 3.3 to 3.x, else ``False``.
        """
        return qos_global_for(self._server_properties)

    def connect(self) -> None:
        """Open the connection and channel 1 (idempotent).

        After the broker closed only the channel, a new channel opens on the same connection;
        after the connection went, the brokers of the URL are tried in turn.

        Raises:
            ConnectionError: no broker could be reached or logged in to (all reasons listed).
        """
        if self.connected:
            return
        conn = self._conn
        if conn is not None and conn.error is None:
            self._open_channel(conn)
            return
        if conn is not None:
            conn.dispose()
            self._conn = None
        failures: list[ConnectionError] = []
        count = len(self.addresses)
        for i in range(count):
            index = (self._next_address + i) % count
            candidate = Connection(self.addresses[index], self.config)
            try:
                candidate.open()
            except ConnectionError as exc:
                failures.append(exc)
                continue
            self._next_address = (index + 1) % count
            break
        else:
            last = failures[-1]
            if count == 1:
                raise last
            reasons = "; ".join(str(exc) for exc in failures)
            raise ConnectionError(
                f"cannot connect to any broker: {reasons}", last.reply_code, last.reply_text
            ) from last
        self._server_properties = candidate.server_properties
        self._conn = candidate
        try:
            self._open_channel(candidate)
        except BaseException:
            candidate.dispose()
            raise

    def _open_channel(self, conn: Connection) -> None:
        self._reset_channel()
        timeout = self.config.rpc_timeout
        self._call(conn, codec.CHANNEL_OPEN, (), _OPEN_OK, "open channel 1", timeout)
        if self.confirm_publish:
            self._call(
                conn, codec.CONFIRM_SELECT, (False,), _CONFIRM_OK, "select confirms", timeout
            )
        self._channel_open = True

    def close(self) -> None:
        """Close channel and connection (briefly waiting for the broker's answers); the broker
        requeues every delivery not acked. Never raises, even on a dead socket."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if conn.error is None:
                if self._channel_open:
                    self._channel_open = False
                    self._call(
                        conn, codec.CHANNEL_CLOSE, _NORMAL, _CLOSE_OK, "close", _CLOSE_TIMEOUT
                    )
                self._call(
                    conn,
                    codec.CONNECTION_CLOSE,
                    _NORMAL,
                    _CONNECTION_CLOSE_OK,
                    "close the connection",
                    _CLOSE_TIMEOUT,
                    channel=0,
                )
        except TransportError as exc:
            logger.debug("closing %s: %s", conn.address, exc)
        finally:
            self._channel_open = False
            self._pending.clear()
            conn.dispose()

    # -- declarations ----------------------------------------------------------------------

    def _rpc(
        self, method: int, args: tuple[Any, ...], replies: frozenset[int], what: str
    ) -> tuple[int, Any, Delivery | None]:
        conn = self._usable(what)
        return self._call(conn, method, args, replies, what, self.config.rpc_timeout)

    def declare_exchange(
        self,
        name: str,
        type: str = "direct",
        durable: bool = True,
        auto_delete: bool = False,
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        args = (name, type, False, durable, auto_delete, False, False, dict(arguments or {}))
        self._rpc(codec.EXCHANGE_DECLARE, args, _EXCHANGE_OK, f"declare exchange {name!r}")

    def declare_queue(
        self,
        name: str,
        durable: bool = True,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: Mapping[str, Any] | None = None,
        passive: bool = False,
    ) -> QueueInfo:
        args = (name, passive, durable, exclusive, auto_delete, False, dict(arguments or {}))
        _, reply, _ = self._rpc(codec.QUEUE_DECLARE, args, _QUEUE_OK, f"declare queue {name!r}")
        return QueueInfo(reply[0], reply[1], reply[2])

    def bind_queue(
        self,
        queue: str,
        exchange: str,
        routing_key: str,
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        args = (queue, exchange, routing_key, False, dict(arguments or {}))
        self._rpc(codec.QUEUE_BIND, args, _BIND_OK, f"bind queue {queue!r} to {exchange!r}")

    def unbind_queue(
        self,
        queue: str,
        exchange: str,
        routing_key: str,
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """Remove one binding (a binding that does not exist is not an error)."""
        args = (queue, exchange, routing_key, dict(arguments or {}))
        self._rpc(codec.QUEUE_UNBIND, args, _UNBIND_OK, f"unbind queue {queue!r}")

    def purge_queue(self, name: str) -> int:
        _, reply, _ = self._rpc(
            codec.QUEUE_PURGE, (name, False), _PURGE_OK, f"purge queue {name!r}"
        )
        return int(reply[0])

    def delete_queue(self, name: str, if_unused: bool = False, if_empty: bool = False) -> int:
        args = (name, if_unused, if_empty, False)
        _, reply, _ = self._rpc(codec.QUEUE_DELETE, args, _DELETE_OK, f"delete queue {name!r}")
        return int(reply[0])

    def delete_exchange(self, name: str) -> None:
        args = (name, False, False)
        self._rpc(codec.EXCHANGE_DELETE, args, _EXCHANGE_DELETE_OK, f"delete exchange {name!r}")

    # -- consuming -------------------------------------------------------------------------

    def qos(self, prefetch_count: int, global_: bool = False) -> None:
        """``basic.qos``; counts over 65535 (the field's limit) mean unlimited, as in Celery.

        See :meth:`qos_global_default` for the ``global_`` that limits the whole channel.
        """
        if prefetch_count < 0:
            raise ValueError(f"cannot set qos: prefetch_count {prefetch_count} is negative")
        count = prefetch_count if prefetch_count <= 0xFFFF else 0
        self._rpc(codec.BASIC_QOS, (0, count, global_), _QOS_OK, f"set qos {prefetch_count}")

    def consume(
        self,
        queue: str,
        callback: DeliveryCallback,
        no_ack: bool = False,
        consumer_tag: str | None = None,
    ) -> str:
        # The tag is ours, so the callback is in place before the first delivery can arrive.
        tag = consumer_tag or f"celeriac.{next(_consumer_numbers)}"
        what = f"consume from queue {queue!r}"
        conn = self._usable(what)
        args: tuple[Any, ...] = (queue, tag, False, no_ack, False, False, {})
        if tag in self._callbacks:
            # The broker refuses a tag in use (530, closing the channel, as the memory
            # transport does); the consumer that has it keeps its callback.
            self._call(conn, codec.BASIC_CONSUME, args, _CONSUME_OK, what, self.config.rpc_timeout)
            return tag
        self._callbacks[tag] = callback
        try:
            self._call(conn, codec.BASIC_CONSUME, args, _CONSUME_OK, what, self.config.rpc_timeout)
        except BaseException:
            self._callbacks.pop(tag, None)
            raise
        return tag

    def cancel(self, consumer_tag: str) -> None:
        """Stop a consumer; deliveries already received still reach its callback."""
        what = f"cancel consumer {consumer_tag!r}"
        self._rpc(codec.BASIC_CANCEL, (consumer_tag, False), _CANCEL_OK, what)
        self._callbacks.pop(consumer_tag, None)

    def drain_events(self, timeout: float | None = None) -> int:
        """Dispatch ready deliveries to their callbacks, waiting up to ``timeout`` seconds
        (``None``: forever) for the first; return how many ran (0 on timeout or wakeup).

        Other frames (confirms, blocks, cancels) are handled on the way. An exception from a
        callback propagates; the deliveries not yet dispatched wait for the next call.

        Raises:
            ConnectionError: the connection closed or died (missed heartbeats included).
            ChannelError: the broker closed the channel.
        """
        conn = self._conn
        if conn is None or conn.error is not None or not self._channel_open:
            conn = self._usable("drain events")
        try:
            if self._pending:
                # Returning now answers a wakeup, and forgets the ones other threads sent
                # with what they queued: the deque is emptied below, after this.
                self._woken = False
                conn.drain_wakeups()
                return self._dispatch()
            deadline = None if timeout is None else monotonic() + timeout
            self._wait(conn, self._has_pending, deadline, wakeup=True)
            return self._dispatch() if self._pending else 0
        finally:
            # What select cannot see: deliveries left by a callback that raised, and bytes
            # TLS already decrypted.
            if self._pending or conn.buffered():
                conn.wake()

    def filenos(self) -> tuple[int, ...]:
        """The socket and the wakeup socket (``()`` when not connected).

        Readable whenever ``drain_events(0)`` has work: bytes from the broker, deliveries
        another thread read (a publish or declare handles what already arrived, and then
        wakes this), or :meth:`wakeup`. A new connection has new descriptors.
        """
        conn = self._conn
        return () if conn is None else conn.filenos()

    def wakeup(self) -> None:
        """Make a blocked :meth:`drain_events` return 0 now (or the next one, if none is)."""
        self._woken = True
        conn = self._conn
        if conn is not None:
            conn.wake()

    def get(self, queue: str, no_ack: bool = False) -> Delivery | None:
        _, _, delivery = self._rpc(codec.BASIC_GET, (queue, no_ack), _GET, f"get from {queue!r}")
        if delivery is not None and self._tag_offset:
            delivery.delivery_tag += self._tag_offset
        return delivery

    # -- settling --------------------------------------------------------------------------

    def _settle(self, delivery_tag: int, method: int, args: tuple[Any, ...], what: str) -> None:
        conn = self._conn
        if (
            conn is None
            or conn.error is not None
            or not self._channel_open
            or delivery_tag >> TAG_BITS != self._generation & GENERATION_MASK
        ):
            raise ConnectionError(
                f"cannot {what} delivery tag {delivery_tag}: the channel that delivered it is "
                "gone (the broker redelivers the message)"
            )
        conn.send(codec.encode_method(1, method, args), f"{what} delivery tag {delivery_tag}")

    def ack(self, delivery_tag: int, multiple: bool = False) -> None:
        self._settle(delivery_tag, codec.BASIC_ACK, (delivery_tag & TAG_MASK, multiple), "ack")

    def reject(self, delivery_tag: int, requeue: bool = False) -> None:
        args = (delivery_tag & TAG_MASK, requeue)
        self._settle(delivery_tag, codec.BASIC_REJECT, args, "reject")

    def nack(self, delivery_tag: int, multiple: bool = False, requeue: bool = True) -> None:
        """``basic.nack``: reject one delivery, or all up to ``delivery_tag`` with ``multiple``."""
        args = (delivery_tag & TAG_MASK, multiple, requeue)
        self._settle(delivery_tag, codec.BASIC_NACK, args, "nack")


_NORMAL = (200, "Normal shutdown", 0, 0)
_OPEN_OK = frozenset({codec.CHANNEL_OPEN_OK})
_CONFIRM_OK = frozenset({codec.CONFIRM_SELECT_OK})
_CLOSE_OK = frozenset({codec.CHANNEL_CLOSE_OK})
_CONNECTION_CLOSE_OK = frozenset({codec.CONNECTION_CLOSE_OK})
_EXCHANGE_OK = frozenset({codec.EXCHANGE_DECLARE_OK})
_EXCHANGE_DELETE_OK = frozenset({codec.EXCHANGE_DELETE_OK})
_QUEUE_OK = frozenset({codec.QUEUE_DECLARE_OK})
_BIND_OK = frozenset({codec.QUEUE_BIND_OK})
_UNBIND_OK = frozenset({codec.QUEUE_UNBIND_OK})
_PURGE_OK = frozenset({codec.QUEUE_PURGE_OK})
_DELETE_OK = frozenset({codec.QUEUE_DELETE_OK})
_QOS_OK = frozenset({codec.BASIC_QOS_OK})
_CONSUME_OK = frozenset({codec.BASIC_CONSUME_OK})
_CANCEL_OK = frozenset({codec.BASIC_CANCEL_OK})
_GET = frozenset({codec.BASIC_GET_OK, codec.BASIC_GET_EMPTY})
