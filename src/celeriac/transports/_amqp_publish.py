"""Publishing on the AMQP transport's channel: blocked connections, confirms and returns."""

from __future__ import annotations

from collections.abc import Mapping
from time import monotonic
from typing import Any

from celeriac._accel import amqp_codec as codec
from celeriac.errors import ChannelError, ConnectionBlocked, TransportError
from celeriac.transports._amqp_channel import ChannelCore
from celeriac.transports._amqp_connection import Connection
from celeriac.transports._amqp_url import AMQPOptions

__all__ = ["Publishing"]

_NO_PROPERTIES: Mapping[str, Any] = {}


class Publishing(ChannelCore):
    """:meth:`publish`, which never waits longer than ``publish_timeout``."""

    config: AMQPOptions

    def publish(
        self,
        body: bytes,
        exchange: str,
        routing_key: str,
        headers: Mapping[str, Any] | None = None,
        properties: Mapping[str, Any] | None = None,
        mandatory: bool = False,
    ) -> None:
        """Publish one message (with ``confirm_publish``: and wait for the broker's confirm).

        Raises:
            ConnectionBlocked: the broker blocked the connection, or the socket or the confirm
                did not come through, for ``publish_timeout`` seconds.
            ChannelError: a mandatory message was returned (with ``confirm_publish``; without
                it the return is only logged and kept in :attr:`returned`), or the broker
                closed the channel (e.g. no such exchange).
            TransportError: the broker refused the message (``basic.nack``).
        """
        conn = self._conn
        if conn is None or conn.error is not None or not self._channel_open:
            conn = self._usable(_what(exchange, routing_key))
        self._poll_incoming(conn)
        if self._blocked is not None:
            self._wait_unblocked(conn, exchange, routing_key)
        frame = codec.encode_message(
            1,
            exchange,
            routing_key,
            mandatory,
            body,
            properties or _NO_PROPERTIES,
            headers,
            conn.frame_max,
        )
        if not self.confirm_publish:
            conn.send(frame, _what(exchange, routing_key))
            return
        self._publish_confirmed(conn, frame, exchange, routing_key)

    def _wait_unblocked(self, conn: Connection, exchange: str, routing_key: str) -> None:
        deadline = monotonic() + self.config.publish_timeout
        if not self._wait(conn, self._unblocked, deadline):
            reason = self._blocked
            raise ConnectionBlocked(
                f"cannot {_what(exchange, routing_key)}: the broker blocked this connection "
                f"({reason}) for {monotonic() - self._blocked_since:.0f}s"
            )

    def _unblocked(self) -> bool:
        return self._blocked is None

    def _publish_confirmed(
        self, conn: Connection, frame: bytes, exchange: str, routing_key: str
    ) -> None:
        what = _what(exchange, routing_key)
        with conn.write_lock:
            # The broker numbers publishes in the order they reach the channel: number them
            # under the lock that orders the writes.
            with self._confirm_lock:
                self._publish_seq += 1
                seq = self._publish_seq
                self._outstanding.add(seq)
            conn.send_locked(frame, what)
        timeout = self.config.publish_timeout
        try:
            self._wait(conn, lambda: seq in self._confirmed, monotonic() + timeout)
        finally:
            with self._confirm_lock:
                result = self._confirmed.pop(seq, None)
                self._outstanding.discard(seq)
        if result is None:
            if self._blocked is not None:
                raise ConnectionBlocked(
                    f"cannot {what}: the broker blocked this connection ({self._blocked}) "
                    f"for {monotonic() - self._blocked_since:.0f}s"
                )
            raise TransportError(
                f"cannot {what}: the broker did not confirm it within {timeout:g}s"
            )
        acked, returned = result
        if returned is not None:
            raise ChannelError(
                f"cannot {what}: the broker returned it: {returned[1]} ({returned[0]})",
                returned[0],
                returned[1],
            )
        if not acked:
            raise TransportError(f"cannot {what}: the broker refused it (basic.nack)")


def _what(exchange: str, routing_key: str) -> str:
    """``publish to <exchange>/<routing key>`` for error messages (``amq.default`` for ``''``,
    RabbitMQ's name for the default exchange)."""
    return f"publish to {exchange or 'amq.default'}/{routing_key}"
