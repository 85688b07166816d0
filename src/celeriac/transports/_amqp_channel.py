"""The AMQP transport's channel 1: who reads the socket, and what each incoming method does."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from time import monotonic
from typing import Any

from celeriac._accel import amqp_codec as codec
from celeriac.errors import ChannelError, ConnectionError, TransportError
from celeriac.transports._amqp_connection import Connection
from celeriac.transports.base import Delivery, DeliveryCallback

__all__ = ["TAG_BITS", "ChannelCore", "Returned"]

logger = logging.getLogger("celeriac.transports.amqp")

# A delivery tag we hand out is (generation << TAG_BITS) | the broker's tag, so a tag from an
# earlier channel can be told apart (and refused) after a reconnect. 2**48 deliveries on one
# channel is 178 years at 50k/s; 16 generation bits keep the tag in 64 bits for C callers.
TAG_BITS = 48
TAG_MASK = (1 << TAG_BITS) - 1
GENERATION_MASK = 0xFFFF
# How long a thread waiting for another thread's read sleeps before it looks again; every
# read ends with a notify, so this only bounds a lost race.
_TURN = 0.05

# (reply_code, reply_text, exchange, routing_key, message)
Returned = tuple[int, str, str, str, Any]
# (reply_code, reply_text, the message `what`)
_Closed = tuple[int, str, str]


class ChannelCore:
    """The state of channel 1 and the one loop that reads the connection.

    Any thread may need a frame from the broker (a declare's answer, a publisher confirm, the
    end of a block). The thread that gets :attr:`_read_lock` reads and handles *every* frame;
    the others wait on :attr:`_cond` for the state they need. Deliveries are only queued here
    (with their consumer's callback, bound at consume time); :meth:`_dispatch` runs them in
    ``drain_events``'s thread, never under a lock.
    """

    def __init__(self) -> None:
        self._conn: Connection | None = None
        self._channel_open = False
        self._channel_closed: _Closed | None = None
        self._generation = -1
        self._tag_offset = 0
        self._callbacks: dict[str, DeliveryCallback] = {}
        self._pending: deque[tuple[DeliveryCallback, Delivery]] = deque()
        self._has_pending: Callable[[], object] = self._pending.__len__
        self._read_lock = threading.Lock()
        self._cond = threading.Condition()
        self._rpc_lock = threading.Lock()
        self._expect: frozenset[int] = frozenset()
        self._reply: tuple[int, Any, Delivery | None] | None = None
        self._woken = False
        self._blocked: str | None = None
        self._blocked_since = 0.0
        self._confirm_lock = threading.Lock()
        self._publish_seq = 0
        self._outstanding: set[int] = set()
        self._confirmed: dict[int, tuple[bool, Returned | None]] = {}
        self._last_return: Returned | None = None
        self.confirm_publish = False
        self.cancelled_by_broker: set[str] = set()
        """Consumer tags the broker cancelled (``basic.cancel``, e.g. their queue was deleted).
        Their callbacks are forgotten; consume again to resume. The worker clears the set."""
        self.returned: deque[Returned] = deque(maxlen=100)
        """Mandatory messages the broker returned while confirms were off (the newest 100)."""

    # -- state -----------------------------------------------------------------------------

    def _reset_channel(self) -> None:
        """Forget everything of the previous channel, before channel 1 opens (again)."""
        self._generation += 1
        self._tag_offset = (self._generation & GENERATION_MASK) << TAG_BITS
        self._channel_open = False
        self._channel_closed = None
        self._callbacks.clear()
        self._pending.clear()
        self._blocked = None
        self._reply = None
        with self._confirm_lock:
            self._publish_seq = 0
            self._outstanding.clear()
            self._confirmed.clear()
        self._last_return = None

    def _usable(self, what: str) -> Connection:
        """The connection, if it and the channel are open; else raise why they are not."""
        conn = self._conn
        if conn is None:
            raise ConnectionError(f"cannot {what}: not connected, call connect() first")
        if conn.error is not None:
            raise ConnectionError(
                f"cannot {what}: {conn.error}; call connect() again",
                conn.error.reply_code,
                conn.error.reply_text,
            )
        closed = self._channel_closed
        if closed is not None:
            raise ChannelError(
                f"cannot {what}: the broker closed the channel: {closed[2]}; call connect() again",
                closed[0],
                closed[1],
            )
        if not self._channel_open:
            raise ConnectionError(f"cannot {what}: the channel is not open, call connect()")
        return conn

    def _raise_if_broken(self, conn: Connection, channel: bool) -> None:
        """Raise the broker's own words if the connection (or the channel) closed."""
        if conn.error is not None:
            raise conn.copy_error()
        closed = self._channel_closed
        if channel and closed is not None:
            raise ChannelError(closed[2], closed[0], closed[1])

    # -- waiting and reading ---------------------------------------------------------------

    def _wait(
        self,
        conn: Connection,
        done: Callable[[], object],
        deadline: float | None,
        wakeup: bool = False,
        channel: bool = True,
    ) -> bool:
        """Read and handle frames until ``done()`` holds (True) or ``deadline`` passes (False).

        With ``wakeup``, :meth:`wakeup` ends the wait early (False). Reads at least once, so
        a deadline in the past polls without blocking.

        Raises:
            ConnectionError: the connection closed or died meanwhile.
            ChannelError: the broker closed the channel meanwhile (with ``channel``).
        """
        while True:
            self._raise_if_broken(conn, channel)
            if done():
                return True
            if wakeup and self._woken:
                self._woken = False
                conn.drain_wakeups()
                return False
            if self._read_lock.acquire(blocking=False):
                try:
                    if done():
                        return True
                    events = conn.read(deadline, wakeup)
                    if events is None:
                        self._woken = False
                        return False
                    # Deliveries read for anyone but drain_events: wake the consumer loop,
                    # whose select cannot see bytes already taken off the socket.
                    if self._process(conn, events) and not wakeup:
                        conn.wake()
                finally:
                    self._read_lock.release()
                    with self._cond:
                        self._cond.notify_all()
            else:
                with self._cond:
                    if not done():
                        wait = _TURN if deadline is None else min(_TURN, deadline - monotonic())
                        if wait > 0:
                            self._cond.wait(wait)
            if deadline is not None and monotonic() >= deadline:
                self._raise_if_broken(conn, channel)
                return bool(done())

    def _poll_incoming(self, conn: Connection) -> None:
        """Handle what the broker already sent (a block, a channel close) without waiting.

        Skipped when another thread is reading: that thread handles it.
        """
        if conn.readable() and self._read_lock.acquire(blocking=False):
            try:
                events = conn.read(monotonic())
                if events and self._process(conn, events):
                    conn.wake()
            finally:
                self._read_lock.release()
                with self._cond:
                    self._cond.notify_all()

    def _process(self, conn: Connection, events: list[Any]) -> bool:
        """Handle a batch of frames in wire order (the caller holds the read lock); return
        whether it queued a delivery or closed the channel (work for ``drain_events``)."""
        pending = self._pending
        queued = len(pending)
        open_before = self._channel_open
        callbacks = self._callbacks
        offset = self._tag_offset
        heartbeat = codec.HEARTBEAT
        for event in events:
            if type(event) is Delivery:
                if offset:
                    event.delivery_tag += offset
                callback = callbacks.get(event.delivery_info["consumer_tag"])
                if callback is not None:
                    pending.append((callback, event))
                else:
                    logger.warning(
                        "dropping %r for consumer %r, which is gone; the broker redelivers it "
                        "when the channel closes",
                        event,
                        event.delivery_info["consumer_tag"],
                    )
            elif event is not heartbeat:
                self._on_method(conn, event)
        return len(pending) > queued or (open_before and not self._channel_open)

    def _dispatch(self) -> int:
        """Run the queued deliveries' callbacks; return how many ran."""
        pending = self._pending
        count = 0
        while pending:
            try:
                callback, delivery = pending.popleft()
            except IndexError:  # the channel closed meanwhile and cleared the queue
                break
            count += 1
            callback(delivery)
        return count

    # -- incoming methods ------------------------------------------------------------------

    def _on_method(self, conn: Connection, event: tuple[Any, ...]) -> None:
        method, args = event[1], event[2]
        if method == codec.BASIC_ACK or method == codec.BASIC_NACK:
            self._on_confirm(args[0], args[1], method == codec.BASIC_ACK)
        elif method == codec.BASIC_RETURN:
            self._on_return(args, event[3])
        elif method == codec.BASIC_CANCEL:
            self._on_cancel(conn, args)
        elif method == codec.CHANNEL_CLOSE:
            self._on_channel_close(conn, args)
        elif method == codec.CONNECTION_CLOSE:
            self._on_connection_close(conn, args)
        elif method == codec.CONNECTION_BLOCKED:
            self._blocked = str(args[0]) if args and args[0] else "no reason given"
            self._blocked_since = monotonic()
            logger.warning("the broker blocked publishing on %s: %s", conn.address, self._blocked)
        elif method == codec.CONNECTION_UNBLOCKED:
            self._blocked = None
            logger.info("the broker unblocked publishing on %s", conn.address)
        elif method == codec.CHANNEL_FLOW:
            self._send_quietly(conn, 1, codec.CHANNEL_FLOW_OK, (args[0],), "answer channel.flow")
        elif method in self._expect:
            self._reply = (method, args, event[3] if len(event) > 3 else None)
        else:
            logger.debug(
                "ignoring %s on channel %s", codec.METHOD_NAMES.get(method, method), event[0]
            )

    def _on_confirm(self, tag: int, multiple: bool, acked: bool) -> None:
        # A mandatory message nobody takes is returned, then confirmed: the return belongs to
        # the next confirm's tag.
        returned, self._last_return = self._last_return, None
        with self._confirm_lock:
            if multiple:
                settled = [seq for seq in self._outstanding if seq <= tag]
            else:
                settled = [tag] if tag in self._outstanding else []
            for seq in settled:
                self._outstanding.discard(seq)
                self._confirmed[seq] = (acked, returned if seq == tag else None)

    def _on_return(self, args: tuple[Any, ...], message: Any) -> None:
        returned: Returned = (args[0], args[1], args[2], args[3], message)
        if self.confirm_publish:
            self._last_return = returned
            return
        self.returned.append(returned)
        logger.warning(
            "the broker returned a message published to %r with routing key %r: %s (%s)",
            args[2],
            args[3],
            args[1],
            args[0],
        )

    def _on_cancel(self, conn: Connection, args: tuple[Any, ...]) -> None:
        tag = args[0]
        self._callbacks.pop(tag, None)
        self.cancelled_by_broker.add(tag)
        logger.warning(
            "the broker cancelled consumer %r (its queue was deleted or moved); consume again "
            "to resume",
            tag,
        )
        if len(args) > 1 and not args[1]:
            self._send_quietly(conn, 1, codec.BASIC_CANCEL_OK, (tag,), "answer basic.cancel")

    def _on_channel_close(self, conn: Connection, args: tuple[Any, ...]) -> None:
        code, text, class_id, method_id = args
        name = codec.METHOD_NAMES.get((class_id << 16) | method_id, "channel")
        self._channel_open = False
        self._channel_closed = (code, text, f"{name}: {text} ({code})")
        self._pending.clear()
        self._callbacks.clear()
        self._send_quietly(conn, 1, codec.CHANNEL_CLOSE_OK, (), "answer channel.close")
        if codec.CHANNEL_CLOSE_OK in self._expect:  # we were closing it too
            self._reply = (codec.CHANNEL_CLOSE_OK, (), None)
        logger.warning("the broker closed the channel on %s: %s", conn.address, text)

    def _on_connection_close(self, conn: Connection, args: tuple[Any, ...]) -> None:
        code, text = args[0], args[1]
        self._send_quietly(conn, 0, codec.CONNECTION_CLOSE_OK, (), "answer connection.close")
        message = f"connection to {conn.address} closed by the broker: {text} ({code})"
        conn.kill(ConnectionError(message, code, text))
        self._channel_open = False
        self._pending.clear()
        if codec.CONNECTION_CLOSE_OK in self._expect:
            self._reply = (codec.CONNECTION_CLOSE_OK, (), None)
        logger.warning("%s", message)

    @staticmethod
    def _send_quietly(conn: Connection, channel: int, method: int, args: Any, what: str) -> None:
        try:
            conn.send(codec.encode_method(channel, method, args), what)
        except TransportError as exc:
            logger.debug("cannot %s: %s", what, exc)

    # -- synchronous methods ---------------------------------------------------------------

    def _call(
        self,
        conn: Connection,
        method: int,
        args: tuple[Any, ...],
        replies: frozenset[int],
        what: str,
        timeout: float,
        channel: int = 1,
    ) -> tuple[int, Any, Delivery | None]:
        """Send a synchronous method and wait for its answer (one at a time per transport).

        Raises:
            ChannelError: the broker closed the channel instead (its words in the message).
            ConnectionError: the connection died, or no answer came within ``timeout`` (the
                connection is then closed: a late answer would be taken for the next one's).
        """
        with self._rpc_lock:
            self._reply = None
            self._expect = replies
            try:
                conn.send(codec.encode_method(channel, method, args), what)
                deadline = monotonic() + timeout
                if not self._wait(conn, self._has_reply, deadline, channel=channel == 1):
                    conn.kill(
                        ConnectionError(
                            f"cannot {what}: no answer from the broker at {conn.address} "
                            f"within {timeout:g}s"
                        )
                    )
                    raise conn.copy_error()
                reply = self._reply
                assert reply is not None
                return reply
            finally:
                self._expect = frozenset()
                self._reply = None

    def _has_reply(self) -> bool:
        return self._reply is not None
