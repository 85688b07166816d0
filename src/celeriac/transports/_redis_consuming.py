"""Consuming on the Redis transport: ``BRPOP`` driven from ``drain_events``, prefetch, acks.

See :mod:`celeriac.transports.redis` for how this meets the worker's select loop.
"""

from __future__ import annotations

import itertools
import logging
import select
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from time import monotonic
from typing import Any

import redis

from celeriac.errors import ChannelError, ConnectionError, ProtocolError
from celeriac.transports._redis_acks import Unacked
from celeriac.transports._redis_envelope import INTERNAL_PROPERTIES, body_of, loads
from celeriac.transports._redis_keys import Keys
from celeriac.transports._redis_options import RedisOptions
from celeriac.transports._redis_poll import Item, Poller, Signal
from celeriac.transports.base import Delivery, DeliveryCallback

__all__ = ["Consuming"]

logger = logging.getLogger("celeriac.transports.redis")

_consumer_numbers = itertools.count(1)
# the most messages one request takes when the prefetch count does not limit it
_MOST = 100


class Consuming:
    """The consuming half of :class:`~celeriac.transports.redis.RedisTransport`."""

    keys: Keys
    config: RedisOptions
    masked_url: str
    _client: redis.Redis | None
    _poller: Poller | None
    _signal: Signal | None
    _unacked: Unacked | None
    _broken: bool
    _usable: Callable[[str], redis.Redis]
    _call: Callable[..., Any]

    def __init__(self) -> None:
        self._woken = False
        self._prefetch = 0
        self._consumers: dict[str, tuple[str, DeliveryCallback, bool]] = {}
        self._by_queue: dict[str, str] = {}
        self._next_restore = 0.0
        #: taken from Redis, not yet dispatched (a callback raised in the middle of a batch)
        self._pending: deque[Item] = deque()

    def _reset_consuming(self) -> None:
        """What belongs to one connection: consumers, qos, the pending wakeup."""
        self._consumers.clear()
        self._by_queue.clear()
        self._prefetch = 0
        self._woken = False
        self._next_restore = 0.0
        self._pending.clear()

    def qos(self, prefetch_count: int, global_: bool = False) -> None:
        """Limit this connection's unacked deliveries to ``prefetch_count`` (0 = unlimited)."""
        if prefetch_count < 0:
            raise ValueError(f"cannot set qos: prefetch_count {prefetch_count} is negative")
        self._usable(f"set qos {prefetch_count}")
        self._prefetch = prefetch_count
        self._poke()

    def consume(
        self,
        queue: str,
        callback: DeliveryCallback,
        no_ack: bool = False,
        consumer_tag: str | None = None,
    ) -> str:
        self._usable(f"consume from queue {queue!r}")
        assert self._poller is not None
        tag = consumer_tag or f"celeriac.{next(_consumer_numbers)}"
        if tag in self._consumers:
            raise ChannelError(
                f"cannot consume from queue {queue!r}: consumer tag {tag!r} is in use (530)",
                530,
                "NOT_ALLOWED - attempt to reuse consumer tag",
            )
        self._consumers[tag] = (queue, callback, no_ack)
        self._by_queue[queue] = tag
        if queue not in self._poller.queues:
            self._poller.queues.append(queue)
        self._poke()
        return tag

    def cancel(self, consumer_tag: str) -> None:
        """Stop a consumer; a message ``BRPOP`` brings for it later goes back to its list."""
        entry = self._consumers.pop(consumer_tag, None)
        if entry is None:
            return
        queue = entry[0]
        if self._by_queue.get(queue) == consumer_tag:
            del self._by_queue[queue]
            for tag, (other, _, _) in self._consumers.items():
                if other == queue:
                    self._by_queue[queue] = tag
                    break
        poller = self._poller
        if poller is not None and queue not in self._by_queue and queue in poller.queues:
            poller.queues.remove(queue)

    def _room(self) -> int:
        """How many more deliveries the prefetch limit allows now."""
        unacked = self._unacked
        if not self._prefetch or unacked is None:
            return _MOST
        return min(_MOST, self._prefetch - len(unacked) - len(self._pending))

    def _poke(self) -> None:
        signal = self._signal
        if signal is not None:
            signal.set()

    def drain_events(self, timeout: float | None = None) -> int:
        """Dispatch what Redis delivered, waiting up to ``timeout`` seconds (``None``: forever)
        for the first; return how many ran (0 on timeout or after :meth:`wakeup`).

        Raises:
            ConnectionError: the connection was lost, or ``BRPOP`` went unanswered for longer
                than its timeout plus ``health_check_interval``.
        """
        self._usable("drain events")
        deadline = None if timeout is None else monotonic() + timeout
        while True:
            count = self._drain_once()
            if count:
                return count
            if self._woken:
                self._woken = False
                return 0
            wait = 1.0 if deadline is None else min(1.0, deadline - monotonic())
            if wait <= 0:
                return 0
            poller, signal = self._poller, self._signal
            if poller is None or signal is None:
                self._usable("drain events")
                return 0
            fds = [signal.fileno()]
            if poller.in_flight:
                fds.append(poller.fileno())
            try:
                select_readable(fds, wait)
            except OSError as exc:  # closed by another thread
                raise ConnectionError(f"cannot drain events from {self.masked_url}: {exc}") from exc

    def _drain_once(self) -> int:
        poller, signal, unacked = self._poller, self._signal, self._unacked
        if poller is None or signal is None or unacked is None:
            self._usable("drain events")
            return 0
        signal.clear()
        count = self._dispatch(signal) if self._pending else 0
        if poller.in_flight:
            if poller.ready():
                self._pending.extend(self._call("read from redis", poller.read))
                count += self._dispatch(signal)
            elif poller.overdue():
                self._broken = True
                raise ConnectionError(
                    f"cannot drain events: redis broker {self.masked_url} did not answer "
                    f"for {self.config.brpop_timeout + self.config.health_check_interval:g}s"
                )
        elif poller.closed():
            # the socket stays readable: the loop would spin on it without ever getting here
            self._broken = True
            raise ConnectionError(
                f"cannot drain events: redis broker {self.masked_url} closed the connection"
            )
        if self._consumers:
            now = monotonic()
            if now >= self._next_restore:
                self._next_restore = now + self.config.unacked_restore_interval
                self._call("restore expired deliveries", unacked.restore_visible)
            if not poller.in_flight:
                room = self._room()
                if room > 0:
                    record = any(not no_ack for _, _, no_ack in self._consumers.values())
                    self._call("ask for messages", poller.start, room, record)
        return count

    def _dispatch(self, signal: Signal) -> int:
        pending = self._pending
        count = 0
        try:
            while pending:
                count += self._deliver(*pending.popleft())
        except BaseException:
            # a callback raised: what is left (and the next request) is still work for a
            # drain that the socket will not show
            signal.set()
            raise
        return count

    def _deliver(self, key: str, raw: bytes, recorded: str) -> int:
        assert self._poller is not None and self._unacked is not None and self._client
        queue = self.keys.queue_of(key)
        tag = self._by_queue.get(queue)
        if tag is None:  # cancelled meanwhile: put it back where it was
            if recorded:
                self._call("requeue", self._unacked.restore, recorded)
            else:
                self._call("requeue", self._client.rpush, key, raw)
            return 0
        self._poller.rotate(queue)
        _, callback, no_ack = self._consumers[tag]
        delivery = self._delivery(raw, key, tag, no_ack, recorded)
        if delivery is None:
            return 0
        callback(delivery)
        return 1

    def _delivery(
        self, raw: bytes, key: str, consumer_tag: str, no_ack: bool, recorded: str = ""
    ) -> Delivery | None:
        unacked = self._unacked
        assert unacked is not None
        try:
            envelope = loads(raw, key)
            if not isinstance(envelope, dict):
                raise ProtocolError(f"cannot decode the message from {key}: not an object")
            body = body_of(envelope, f"a message from {key}")
        except ProtocolError as exc:
            # It is off the list already; there is no channel to reject it on.
            logger.error("dropped an undecodable message from %s: %s (%r)", key, exc, raw[:200])
            if recorded:
                self._call("drop an undecodable message", unacked.drop, recorded)
            return None
        props: dict[str, Any] = envelope["properties"]
        info = props.get("delivery_info") or {}
        exchange = info.get("exchange") or ""
        routing_key = info.get("routing_key") or self.keys.queue_of(key)
        if recorded:
            tag = unacked.track(recorded)
            if no_ack:
                self._call("settle a no-ack delivery", unacked.ack, tag)
        elif no_ack:
            tag = unacked.next_tag()
        else:
            uuid_tag = str(props.get("delivery_tag") or uuid.uuid4())
            tag = self._call(
                "record the delivery", unacked.add, raw, uuid_tag, exchange, routing_key
            )
        properties = {k: v for k, v in props.items() if k not in INTERNAL_PROPERTIES}
        properties["content_type"] = envelope.get("content-type")
        properties["content_encoding"] = envelope.get("content-encoding")
        headers = envelope.get("headers")
        delivery_info = {
            "exchange": exchange,
            "routing_key": routing_key,
            "redelivered": bool(info.get("redelivered", False)),
            "consumer_tag": consumer_tag,
        }
        return Delivery(body, headers if headers else {}, properties, delivery_info, tag)

    def filenos(self) -> tuple[int, ...]:
        """The ``BRPOP`` socket and the signal pipe (``()`` when not connected); see the module
        docstring. A new connection has new descriptors."""
        poller, signal = self._poller, self._signal
        if poller is None or signal is None or self._broken:
            return ()
        return (poller.fileno(), signal.fileno())

    def wakeup(self) -> None:
        """Make a blocked :meth:`drain_events` return 0 now (or the next one, if none is)."""
        self._woken = True
        self._poke()

    def get(self, queue: str, no_ack: bool = False) -> Delivery | None:
        """``RPOP`` the next message of ``queue`` (step 0 first), or ``None``."""
        what = f"get from queue {queue!r}"
        client = self._usable(what)
        for key in self.keys.queue_lists(queue):
            raw: Any = self._call(what, client.rpop, key)
            if raw:
                return self._delivery(bytes(raw), key, "", no_ack)
        return None

    # -- settling --------------------------------------------------------------------------

    def ack(self, delivery_tag: int, multiple: bool = False) -> None:
        unacked = self._unacked
        if unacked is None or self._broken:
            self._usable(f"ack delivery tag {delivery_tag}")
            return
        self._call(f"ack delivery tag {delivery_tag}", unacked.ack, delivery_tag, multiple)
        self._room_made()

    def reject(self, delivery_tag: int, requeue: bool = False) -> None:
        unacked = self._unacked
        if unacked is None or self._broken:
            self._usable(f"reject delivery tag {delivery_tag}")
            return
        self._call(f"reject delivery tag {delivery_tag}", unacked.reject, delivery_tag, requeue)
        self._room_made()

    def _room_made(self) -> None:
        # The drain thread sends the next BRPOP once it sees room; tell it, unless a BRPOP is
        # out already (then it looks at the room itself when the reply comes).
        poller = self._poller
        if self._prefetch and poller is not None and not poller.in_flight:
            self._poke()


def select_readable(fds: Iterable[int], timeout: float) -> list[int]:
    return list(select.select(list(fds), (), (), timeout)[0])
