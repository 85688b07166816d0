"""The state of one embedded virtual host and how messages move in it: routing, TTL, dead-lettering.

:class:`VHost` holds the exchanges, queues and open channels, and the steps every AMQP method
shares; the methods themselves are in ``_memory_declare`` and ``_memory_basic``. Every method
here expects its caller to hold ``lock``.
"""

from __future__ import annotations

import threading
import time
from time import monotonic
from typing import Any, NoReturn

from celeriac.errors import ChannelError, TransportError
from celeriac.transports._memory_channel import Channel, Consumer
from celeriac.transports._memory_exchange import Exchange, builtin_exchanges
from celeriac.transports._memory_queue import Message, Queue

__all__ = ["DEFAULT_VHOST", "VHost"]

DEFAULT_VHOST = "/"

_REPLY_NAMES = {
    312: "NO_ROUTE",
    403: "ACCESS_REFUSED",
    404: "NOT_FOUND",
    405: "RESOURCE_LOCKED",
    406: "PRECONDITION_FAILED",
    503: "COMMAND_INVALID",
    530: "NOT_ALLOWED",
}


class VHost:
    """Exchanges, queues and channels of one virtual host, all guarded by ``lock``."""

    def __init__(self, name: str = DEFAULT_VHOST) -> None:
        self.name = name
        self.lock = threading.Lock()
        self._exchanges: dict[str, Exchange] = builtin_exchanges()
        self._queues: dict[str, Queue] = {}
        self._channels: dict[Channel, None] = {}
        # Queues that may hold a message with a deadline; an ordered set.
        self._ttl_queues: dict[Queue, None] = {}

    # -- channels ----------------------------------------------------------------------------

    def _check(self, ch: Channel, operation: str) -> None:
        if not ch.open:
            raise ch.closed_by(f"cannot {operation}: {ch.reason}")

    def _fail(self, ch: Channel, code: int, text: str) -> NoReturn:
        reason = f"{text} ({code} {_REPLY_NAMES[code]})"
        self._close_channel(
            ch, ChannelError, f"the broker closed the channel: {reason}; call connect() again"
        )
        raise ChannelError(reason)

    def _close_channel(self, ch: Channel, closed_by: type[TransportError], reason: str) -> None:
        if not ch.open:
            return
        ch.open = False
        ch.closed_by = closed_by
        ch.reason = reason
        self._channels.pop(ch, None)
        # Unacked ones were seen by the application, so they come back marked redelivered;
        # ready ones never reached it and come back as they were. Both go back to the head of
        # their queue, oldest first, which is what makes a killed worker lose nothing.
        for _, msg in ch.unacked.values():
            msg.redelivered = True
        pending = [*ch.unacked.values(), *((c.queue, m) for c, m in ch.ready)]
        ch.unacked.clear()
        ch.ready.clear()
        ch.held = 0
        touched: dict[Queue, None] = {}
        for q, msg in reversed(pending):
            if not q.deleted:
                self._requeue(q, msg)
                touched[q] = None
        consumers = list(ch.consumers.values())
        ch.consumers.clear()
        for c in consumers:
            self._remove_consumer(c)
        for q in touched:
            self._dispatch(q)
        # A loop waiting on the notifier calls drain_events and learns why.
        ch.notify()

    def _remove_consumer(self, c: Consumer) -> None:
        q = c.queue
        if c in q.consumers:
            q.consumers.remove(c)
        if q.auto_delete and not q.consumers and not q.deleted:
            self._delete_queue(q)

    # -- lookups and deletion ----------------------------------------------------------------

    def _check_access(self, ch: Channel, q: Queue) -> None:
        if q.owner is not None and q.owner is not ch.owner:
            self._fail(
                ch,
                405,
                f"cannot obtain exclusive access to locked queue {q.name!r} in vhost {self.name!r}",
            )

    def _lookup_queue(self, ch: Channel, name: str) -> Queue:
        q = self._queues.get(name)
        if q is None:
            self._fail(ch, 404, f"no queue {name!r} in vhost {self.name!r}")
        self._check_access(ch, q)
        return q

    def _lookup_exchange(self, ch: Channel, name: str, operation: str) -> Exchange:
        ex = self._exchanges.get(name)
        if ex is None:
            self._fail(ch, 404, f"cannot {operation}: no exchange {name!r} in vhost {self.name!r}")
        return ex

    def _delete_queue(self, q: Queue) -> int:
        q.deleted = True
        del self._queues[q.name]
        self._ttl_queues.pop(q, None)
        # The broker cancels the consumers; deliveries already made stay with their channels.
        for c in q.consumers:
            c.channel.consumers.pop(c.tag, None)
        q.consumers = []
        for ex in list(self._exchanges.values()):
            if ex.unbind(q.name):
                self._maybe_auto_delete_exchange(ex)
        return q.clear()

    def _maybe_auto_delete_exchange(self, ex: Exchange) -> None:
        if ex.auto_delete and not ex.bindings:
            self._exchanges.pop(ex.name, None)

    # -- messages in -------------------------------------------------------------------------

    def _route(
        self,
        names: tuple[str, ...],
        body: bytes,
        headers: dict[str, Any] | None,
        properties: dict[str, Any],
        exchange: str,
        routing_key: str,
        ttl: int | None,
        skip: frozenset[str] = frozenset(),
    ) -> bool:
        routed = False
        priority = properties.get("priority")
        now: float | None = None
        for name in names:
            q = self._queues.get(name)
            if q is None or name in skip:
                continue
            limit = q.ttl if ttl is None else (ttl if q.ttl is None else min(ttl, q.ttl))
            expires_at = None
            if limit is not None:
                if now is None:
                    now = monotonic()
                expires_at = now + limit / 1000.0
                self._ttl_queues[q] = None
            level = q.level_of(priority)
            q.push(Message(body, headers, properties, exchange, routing_key, level, expires_at))
            if q.consumers:
                self._dispatch(q, now)
            routed = True
        return routed

    def _requeue(self, q: Queue, msg: Message) -> None:
        q.push_front(msg)
        if msg.expires_at is not None:
            self._ttl_queues[q] = None

    def _dead_letter(self, q: Queue, msg: Message, reason: str) -> None:
        """Republish ``msg`` to the queue's dead-letter exchange with RabbitMQ's x-death."""
        if q.dlx is None:
            return
        ex = self._exchanges.get(q.dlx)
        if ex is None:
            return  # RabbitMQ drops it silently too
        headers = dict(msg.headers or {})
        deaths = [dict(d) for d in headers.get("x-death") or () if isinstance(d, dict)]
        entry = next(
            (d for d in deaths if (d.get("queue"), d.get("reason")) == (q.name, reason)), None
        )
        if entry is not None:
            deaths.remove(entry)
            entry["count"] = entry.get("count", 0) + 1
        else:
            entry = {
                "count": 1,
                "reason": reason,
                "queue": q.name,
                "time": int(time.time()),
                "exchange": msg.exchange,
                "routing-keys": [msg.routing_key],
            }
            if "expiration" in msg.properties:
                entry["original-expiration"] = msg.properties["expiration"]
        deaths.insert(0, entry)
        headers["x-death"] = deaths
        headers.setdefault("x-first-death-reason", reason)
        headers.setdefault("x-first-death-queue", q.name)
        headers.setdefault("x-first-death-exchange", msg.exchange)
        # The per-message TTL is not carried over, so the message does not die again at once.
        properties = {k: v for k, v in msg.properties.items() if k != "expiration"}
        # A message that goes round without ever being rejected would loop forever: RabbitMQ
        # drops it at a queue it already died in, and so do we.
        skip: frozenset[str] = frozenset()
        if all(d.get("reason") != "rejected" for d in deaths):
            skip = frozenset(str(d.get("queue")) for d in deaths)
        routing_key = q.dlrk if q.dlrk is not None else msg.routing_key
        names = ex.route(routing_key, headers)
        self._route(names, msg.body, headers, properties, ex.name, routing_key, None, skip)

    def _expire_due(self) -> float | None:
        """Drop (or dead-letter) the expired messages at queue heads; return the next deadline."""
        if not self._ttl_queues:
            return None
        now = monotonic()
        upcoming: float | None = None
        for q in list(self._ttl_queues):
            while True:
                msg = q.peek()
                if msg is None:
                    self._ttl_queues.pop(q, None)
                    break
                # Like RabbitMQ, only the head expires: a message without a deadline in front
                # shields the ones behind it.
                if msg.expires_at is None:
                    break
                if msg.expires_at > now:
                    upcoming = msg.expires_at if upcoming is None else min(upcoming, msg.expires_at)
                    break
                q.pop()
                self._dead_letter(q, msg, "expired")
        return upcoming

    # -- messages out ------------------------------------------------------------------------

    def _dispatch(self, q: Queue, now: float | None = None) -> None:
        """Hand waiting messages to consumers, round-robin, as far as their prefetch allows.

        ``now`` is the publish instant when called for a message just routed: like RabbitMQ, a
        message whose TTL is 0 (Celery sends that for an ``expires`` already past) still goes to
        a consumer that can take it at once, and only expires if it has to wait.
        """
        consumers = q.consumers
        while q.size and consumers:
            n = len(consumers)
            for _ in range(n):
                i = q.rr % n
                q.rr = i + 1
                c = consumers[i]
                ch = c.channel
                if c.no_ack or not ch.prefetch or ch.held < ch.prefetch:
                    break
            else:
                return
            msg = q.pop()
            assert msg is not None
            if msg.expires_at is not None and msg.expires_at < (
                monotonic() if now is None else now
            ):
                self._dead_letter(q, msg, "expired")
                continue
            if not c.no_ack:
                ch.held += 1
            ch.ready.append((c, msg))
            # drain_events only ever waits with an empty ready deque, under this lock.
            if len(ch.ready) == 1:
                ch.cond.notify()
            # Every time, not only on the first: a drain may have emptied the pipe while
            # dispatching the deliveries that were ready before this one.
            if ch.notifier is not None:
                ch.notifier.set()

    def _release(self, ch: Channel, count: int) -> None:
        was_full = ch.prefetch and ch.held >= ch.prefetch
        ch.held -= count
        if was_full:
            for c in list(ch.consumers.values()):
                if c.queue.size:
                    self._dispatch(c.queue)
