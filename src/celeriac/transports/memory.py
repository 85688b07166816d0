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

import itertools
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Mapping
from typing import Any, ClassVar, NoReturn
from urllib.parse import unquote, urlsplit

from celeriac.errors import ChannelError, ConfigurationError, ConnectionError, TransportError
from celeriac.transports.base import Delivery, DeliveryCallback, QueueInfo

__all__ = ["DEFAULT_VHOST", "MemoryBroker", "MemoryTransport", "vhost_from_url"]

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
_EXCHANGE_TYPES = frozenset({"direct", "fanout", "topic", "headers"})
# The queue arguments RabbitMQ compares on redeclare; others may differ freely.
_EQUIVALENT_ARGS = (
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-expires",
    "x-max-length",
    "x-max-priority",
    "x-message-ttl",
    "x-overflow",
    "x-queue-type",
)
# Bounds the per-exchange routing cache: event routing keys carry host names and can be many.
_ROUTE_CACHE_SIZE = 4096
_consumer_ids = itertools.count(1)
_monotonic = time.monotonic


def _copy_value(value: Any) -> Any:
    if type(value) is dict:
        return {k: _copy_value(v) for k, v in value.items()}
    if type(value) is list:
        return [_copy_value(v) for v in value]
    return value


def _copy_map(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """Copy headers/properties so that nested dicts and lists are not shared either."""
    return {k: (_copy_value(v) if type(v) in (dict, list) else v) for k, v in mapping.items()}


def _topic_words(key: str) -> tuple[str, ...]:
    # RabbitMQ splits an empty key into no words at all, so '*' does not match ''.
    return tuple(key.split(".")) if key else ()


def _topic_match(pattern: tuple[str, ...], words: tuple[str, ...], i: int = 0, j: int = 0) -> bool:
    """AMQP topic match: ``*`` is exactly one word, ``#`` zero or more."""
    while i < len(pattern):
        word = pattern[i]
        if word == "#":
            if i == len(pattern) - 1:
                return True
            return any(_topic_match(pattern, words, i + 1, k) for k in range(j, len(words) + 1))
        if j == len(words) or (word != "*" and word != words[j]):
            return False
        i += 1
        j += 1
    return j == len(words)


def _headers_match(arguments: Mapping[str, Any], headers: Mapping[str, Any] | None) -> bool:
    headers = headers or {}
    wanted = [(k, v) for k, v in arguments.items() if not k.startswith("x-")]

    def has(key: str, value: Any) -> bool:
        # A binding value of None (AMQP void) asks only that the header be present.
        return key in headers and (value is None or headers[key] == value)

    if arguments.get("x-match", "all") == "any":
        return any(has(k, v) for k, v in wanted)
    return all(has(k, v) for k, v in wanted)


class _Message:
    """One message in one queue (each queue a message is routed to gets its own)."""

    __slots__ = (
        "body",
        "exchange",
        "expires_at",
        "headers",
        "level",
        "properties",
        "redelivered",
        "routing_key",
    )

    def __init__(
        self,
        body: bytes,
        headers: dict[str, Any] | None,
        properties: dict[str, Any],
        exchange: str,
        routing_key: str,
        level: int,
        expires_at: float | None,
    ) -> None:
        # headers and properties are never changed in place once stored: every delivery copies
        # them, and dead-lettering builds new ones.
        self.body = body
        self.headers = headers
        self.properties = properties
        self.exchange = exchange
        self.routing_key = routing_key
        self.level = level
        self.expires_at = expires_at
        self.redelivered = False


class _Queue:
    """A queue: one deque per priority level (one level when it is not a priority queue)."""

    __slots__ = (
        "arguments",
        "auto_delete",
        "consumers",
        "deleted",
        "dlrk",
        "dlx",
        "durable",
        "exclusive",
        "levels",
        "name",
        "owner",
        "rr",
        "size",
        "top",
        "ttl",
    )

    def __init__(
        self,
        name: str,
        durable: bool,
        exclusive: bool,
        auto_delete: bool,
        arguments: dict[str, Any],
        owner: object | None,
        max_priority: int,
        ttl: int | None,
        dlx: str | None,
        dlrk: str | None,
    ) -> None:
        self.name = name
        self.durable = durable
        self.exclusive = exclusive
        self.auto_delete = auto_delete
        self.arguments = arguments
        self.owner = owner
        self.top = max_priority
        self.ttl = ttl
        self.dlx = dlx
        self.dlrk = dlrk
        self.levels: list[deque[_Message]] = [deque() for _ in range(max_priority + 1)]
        self.size = 0
        self.consumers: list[_Consumer] = []
        self.rr = 0
        self.deleted = False

    def level_of(self, priority: Any) -> int:
        if not self.top or not isinstance(priority, int) or priority <= 0:
            return 0
        return min(priority, self.top)

    def push(self, msg: _Message) -> None:
        self.levels[msg.level].append(msg)
        self.size += 1

    def push_front(self, msg: _Message) -> None:
        self.levels[msg.level].appendleft(msg)
        self.size += 1

    def peek(self) -> _Message | None:
        if self.size:
            for level in reversed(self.levels):
                if level:
                    return level[0]
        return None

    def pop(self) -> _Message | None:
        if self.size:
            for level in reversed(self.levels):
                if level:
                    self.size -= 1
                    return level.popleft()
        return None

    def clear(self) -> int:
        count = self.size
        for level in self.levels:
            level.clear()
        self.size = 0
        return count


class _Exchange:
    __slots__ = ("_cache", "auto_delete", "bindings", "durable", "name", "type")

    def __init__(self, name: str, type: str, durable: bool, auto_delete: bool) -> None:
        self.name = name
        self.type = type
        self.durable = durable
        self.auto_delete = auto_delete
        # (queue, routing key or topic pattern, binding arguments), in binding order.
        self.bindings: list[tuple[str, str, dict[str, Any]]] = []
        self._cache: dict[str, tuple[str, ...]] = {}

    def bind(self, queue: str, key: str, arguments: dict[str, Any]) -> None:
        if (queue, key, arguments) not in self.bindings:
            self.bindings.append((queue, key, arguments))
            self._cache.clear()

    def unbind(self, queue: str, key: str | None = None, arguments: Any = None) -> bool:
        """Remove the bindings of ``queue`` (all of them when ``key`` is None)."""
        kept = [
            b
            for b in self.bindings
            if not (b[0] == queue and (key is None or (b[1] == key and b[2] == arguments)))
        ]
        removed = len(kept) != len(self.bindings)
        if removed:
            self.bindings = kept
            self._cache.clear()
        return removed

    def route(self, key: str, headers: Mapping[str, Any] | None) -> tuple[str, ...]:
        if self.type == "headers":
            # Not cacheable: the answer depends on the headers, not the key.
            return tuple(
                dict.fromkeys(q for q, _, a in self.bindings if _headers_match(a, headers))
            )
        hit = self._cache.get(key)
        if hit is None:
            if self.type == "fanout":
                names = (q for q, _, _ in self.bindings)
            elif self.type == "topic":
                words = _topic_words(key)
                names = (q for q, p, _ in self.bindings if _topic_match(_topic_words(p), words))
            else:
                names = (q for q, k, _ in self.bindings if k == key)
            hit = tuple(dict.fromkeys(names))
            if len(self._cache) >= _ROUTE_CACHE_SIZE:
                self._cache.clear()
            self._cache[key] = hit
        return hit


class _Consumer:
    __slots__ = ("callback", "channel", "no_ack", "queue", "tag")

    def __init__(
        self, tag: str, queue: _Queue, channel: _Channel, callback: DeliveryCallback, no_ack: bool
    ) -> None:
        self.tag = tag
        self.queue = queue
        self.channel = channel
        self.callback = callback
        self.no_ack = no_ack


class _Channel:
    """The broker side of one transport's channel."""

    __slots__ = (
        "closed_by",
        "cond",
        "consumers",
        "held",
        "next_tag",
        "open",
        "owner",
        "prefetch",
        "ready",
        "reason",
        "unacked",
        "woken",
    )

    def __init__(self, lock: threading.Lock, owner: object) -> None:
        self.cond = threading.Condition(lock)
        self.owner = owner
        self.open = True
        self.closed_by: type[TransportError] = ChannelError
        self.reason = ""
        # Assigned to a consumer, waiting for drain_events to hand it to the callback.
        self.ready: deque[tuple[_Consumer, _Message]] = deque()
        # Tag order is insertion order, so ack(multiple=True) pops from the front.
        self.unacked: OrderedDict[int, tuple[_Queue, _Message]] = OrderedDict()
        # Deliveries needing an ack that this channel holds, ready or unacked: what qos limits.
        self.held = 0
        self.prefetch = 0
        self.next_tag = 1
        self.consumers: dict[str, _Consumer] = {}
        self.woken = False


class MemoryBroker:
    """The state of one virtual host: exchanges, queues, bindings and open channels.

    Get one with :meth:`get`; :class:`MemoryTransport` does. The AMQP methods take the calling
    transport's channel and are meant to be used through the transport. Every method takes the
    one lock, and no callback ever runs under it.
    """

    _registry: ClassVar[dict[str, MemoryBroker]] = {}
    _registry_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, name: str = DEFAULT_VHOST) -> None:
        self.name = name
        self.lock = threading.Lock()
        self._exchanges: dict[str, _Exchange] = {
            "": _Exchange("", "direct", True, False),
            "amq.direct": _Exchange("amq.direct", "direct", True, False),
            "amq.fanout": _Exchange("amq.fanout", "fanout", True, False),
            "amq.topic": _Exchange("amq.topic", "topic", True, False),
            "amq.headers": _Exchange("amq.headers", "headers", True, False),
            "amq.match": _Exchange("amq.match", "headers", True, False),
        }
        self._queues: dict[str, _Queue] = {}
        self._channels: dict[_Channel, None] = {}
        # Queues that may hold a message with a deadline; an ordered set.
        self._ttl_queues: dict[_Queue, None] = {}

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

    # -- channels ----------------------------------------------------------------------------

    def open_channel(self, owner: object) -> _Channel:
        with self.lock:
            ch = _Channel(self.lock, owner)
            self._channels[ch] = None
            return ch

    def close_connection(self, ch: _Channel) -> None:
        """Close ``ch`` as its connection goes, deleting the connection's exclusive queues."""
        with self.lock:
            self._close_channel(ch, ConnectionError, "the connection was closed")
            for q in [q for q in self._queues.values() if q.owner is ch.owner]:
                self._delete_queue(q)

    def _check(self, ch: _Channel, operation: str) -> None:
        if not ch.open:
            raise ch.closed_by(f"cannot {operation}: {ch.reason}")

    def _fail(self, ch: _Channel, code: int, text: str) -> NoReturn:
        reason = f"{text} ({code} {_REPLY_NAMES[code]})"
        self._close_channel(
            ch, ChannelError, f"the broker closed the channel: {reason}; call connect() again"
        )
        raise ChannelError(reason)

    def _close_channel(self, ch: _Channel, closed_by: type[TransportError], reason: str) -> None:
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
        touched: dict[_Queue, None] = {}
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
        ch.cond.notify_all()

    # -- declarations ------------------------------------------------------------------------

    def declare_exchange(
        self,
        ch: _Channel,
        name: str,
        type: str,
        durable: bool,
        auto_delete: bool,
        arguments: Mapping[str, Any] | None,
    ) -> None:
        with self.lock:
            self._check(ch, f"declare exchange {name!r}")
            if not name:
                self._fail(ch, 403, "cannot declare the default exchange ''")
            if type not in _EXCHANGE_TYPES:
                self._fail(ch, 503, f"cannot declare exchange {name!r}: unknown type {type!r}")
            ex = self._exchanges.get(name)
            if ex is not None:
                for arg, have, want in (
                    ("type", ex.type, type),
                    ("durable", ex.durable, durable),
                    ("auto_delete", ex.auto_delete, auto_delete),
                ):
                    if have != want:
                        self._fail(
                            ch,
                            406,
                            f"inequivalent arg {arg!r} for exchange {name!r} in vhost "
                            f"{self.name!r}: received {want!r} but current is {have!r}",
                        )
                return
            if name.startswith("amq."):
                self._fail(ch, 403, f"cannot declare exchange {name!r}: 'amq.' is reserved")
            self._exchanges[name] = _Exchange(name, type, durable, auto_delete)

    def declare_queue(
        self,
        ch: _Channel,
        name: str,
        durable: bool,
        exclusive: bool,
        auto_delete: bool,
        arguments: Mapping[str, Any] | None,
        passive: bool,
    ) -> QueueInfo:
        with self.lock:
            self._check(ch, f"declare queue {name!r}")
            self._expire_due()
            q = self._queues.get(name) if name else None
            if q is None and passive:
                self._fail(ch, 404, f"no queue {name!r} in vhost {self.name!r}")
            args = dict(arguments or {})
            if q is not None:
                self._check_access(ch, q)
                if not passive:
                    self._check_equivalent(ch, q, durable, auto_delete, args)
                return QueueInfo(q.name, q.size, len(q.consumers))
            if not name:
                name = "amq.gen-" + secrets.token_urlsafe(16)
            elif name.startswith("amq."):
                self._fail(ch, 403, f"cannot declare queue {name!r}: 'amq.' is reserved")
            self._queues[name] = self._new_queue(ch, name, durable, exclusive, auto_delete, args)
            return QueueInfo(name, 0, 0)

    def _new_queue(
        self,
        ch: _Channel,
        name: str,
        durable: bool,
        exclusive: bool,
        auto_delete: bool,
        args: dict[str, Any],
    ) -> _Queue:
        def arg(key: str, kind: type, low: int = 0, high: int | None = None) -> Any:
            value = args.get(key)
            if value is None:
                return None
            ok = isinstance(value, kind) and not isinstance(value, bool)
            if ok and kind is int:
                ok = value >= low and (high is None or value <= high)
            if not ok:
                self._fail(ch, 406, f"invalid arg {key!r} for queue {name!r}: {value!r}")
            return value

        return _Queue(
            name,
            durable,
            exclusive,
            auto_delete,
            args,
            owner=ch.owner if exclusive else None,
            max_priority=arg("x-max-priority", int, 0, 255) or 0,
            ttl=arg("x-message-ttl", int),
            dlx=arg("x-dead-letter-exchange", str),
            dlrk=arg("x-dead-letter-routing-key", str),
        )

    def _check_equivalent(
        self, ch: _Channel, q: _Queue, durable: bool, auto_delete: bool, args: dict[str, Any]
    ) -> None:
        pairs: list[tuple[str, Any, Any]] = [
            ("durable", q.durable, durable),
            ("auto_delete", q.auto_delete, auto_delete),
        ]
        pairs += [(k, q.arguments.get(k), args.get(k)) for k in _EQUIVALENT_ARGS]
        for arg, have, want in pairs:
            if have != want:
                self._fail(
                    ch,
                    406,
                    f"inequivalent arg {arg!r} for queue {q.name!r} in vhost {self.name!r}: "
                    f"received {want!r} but current is {have!r}",
                )

    def _check_access(self, ch: _Channel, q: _Queue) -> None:
        if q.owner is not None and q.owner is not ch.owner:
            self._fail(
                ch,
                405,
                f"cannot obtain exclusive access to locked queue {q.name!r} in vhost {self.name!r}",
            )

    def _lookup_queue(self, ch: _Channel, name: str) -> _Queue:
        q = self._queues.get(name)
        if q is None:
            self._fail(ch, 404, f"no queue {name!r} in vhost {self.name!r}")
        self._check_access(ch, q)
        return q

    def _lookup_exchange(self, ch: _Channel, name: str, operation: str) -> _Exchange:
        ex = self._exchanges.get(name)
        if ex is None:
            self._fail(ch, 404, f"cannot {operation}: no exchange {name!r} in vhost {self.name!r}")
        return ex

    def bind_queue(
        self,
        ch: _Channel,
        queue: str,
        exchange: str,
        routing_key: str,
        arguments: Mapping[str, Any] | None,
        unbind: bool = False,
    ) -> None:
        what = "unbind" if unbind else "bind"
        with self.lock:
            self._check(ch, f"{what} queue {queue!r}")
            q = self._lookup_queue(ch, queue)
            ex = self._lookup_exchange(ch, exchange, f"{what} queue {queue!r}")
            if not exchange:
                self._fail(ch, 403, f"cannot {what} queue {queue!r} to the default exchange")
            if not unbind:
                ex.bind(q.name, routing_key, dict(arguments or {}))
            elif ex.unbind(q.name, routing_key, dict(arguments or {})):
                self._maybe_auto_delete_exchange(ex)

    def purge_queue(self, ch: _Channel, name: str) -> int:
        with self.lock:
            self._check(ch, f"purge queue {name!r}")
            q = self._lookup_queue(ch, name)
            self._ttl_queues.pop(q, None)
            return q.clear()

    def delete_queue(self, ch: _Channel, name: str, if_unused: bool, if_empty: bool) -> int:
        with self.lock:
            self._check(ch, f"delete queue {name!r}")
            q = self._queues.get(name)
            if q is None:
                return 0
            self._check_access(ch, q)
            if if_unused and q.consumers:
                self._fail(ch, 406, f"cannot delete queue {name!r}: it has consumers")
            if if_empty and q.size:
                self._fail(ch, 406, f"cannot delete queue {name!r}: it is not empty")
            return self._delete_queue(q)

    def delete_exchange(self, ch: _Channel, name: str) -> None:
        with self.lock:
            self._check(ch, f"delete exchange {name!r}")
            if not name or name.startswith("amq."):
                self._fail(ch, 403, f"cannot delete exchange {name!r}: it is built in")
            self._exchanges.pop(name, None)

    def _delete_queue(self, q: _Queue) -> int:
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

    def _maybe_auto_delete_exchange(self, ex: _Exchange) -> None:
        if ex.auto_delete and not ex.bindings:
            self._exchanges.pop(ex.name, None)

    # -- messages in -------------------------------------------------------------------------

    def publish(
        self,
        ch: _Channel,
        body: bytes,
        exchange: str,
        routing_key: str,
        headers: Mapping[str, Any] | None,
        properties: Mapping[str, Any] | None,
        mandatory: bool,
    ) -> None:
        # Copied before taking the lock: the publisher may reuse its dicts afterwards.
        hdrs = _copy_map(headers) if headers is not None else None
        props = _copy_map(properties) if properties else {}
        with self.lock:
            self._check(ch, f"publish to exchange {exchange!r}")
            ex = self._exchanges.get(exchange)
            if ex is None:
                self._fail(
                    ch,
                    404,
                    f"cannot publish to exchange {exchange!r}: no exchange {exchange!r} in "
                    f"vhost {self.name!r}",
                )
            expiration = props.get("expiration")
            ttl = None if expiration is None else self._parse_expiration(ch, expiration)
            if self._ttl_queues:
                self._expire_due()
            names = (routing_key,) if not exchange else ex.route(routing_key, hdrs)
            if not self._route(names, body, hdrs, props, exchange, routing_key, ttl) and mandatory:
                raise ChannelError(
                    f"cannot publish to exchange {exchange!r} with routing key {routing_key!r}: "
                    "no queue is bound to take it (312 NO_ROUTE)"
                )

    def _parse_expiration(self, ch: _Channel, value: Any) -> int:
        if isinstance(value, str) and value.isdigit():
            return int(value)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        self._fail(ch, 406, f"cannot publish: invalid expiration {value!r}, want ms as a string")

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
                    now = _monotonic()
                expires_at = now + limit / 1000.0
                self._ttl_queues[q] = None
            level = q.level_of(priority)
            q.push(_Message(body, headers, properties, exchange, routing_key, level, expires_at))
            if q.consumers:
                self._dispatch(q, now)
            routed = True
        return routed

    def _requeue(self, q: _Queue, msg: _Message) -> None:
        q.push_front(msg)
        if msg.expires_at is not None:
            self._ttl_queues[q] = None

    def _dead_letter(self, q: _Queue, msg: _Message, reason: str) -> None:
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
        names = (routing_key,) if not ex.name else ex.route(routing_key, headers)
        self._route(names, msg.body, headers, properties, ex.name, routing_key, None, skip)

    def _expire_due(self) -> float | None:
        """Drop (or dead-letter) the expired messages at queue heads; return the next deadline."""
        if not self._ttl_queues:
            return None
        now = _monotonic()
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

    def _dispatch(self, q: _Queue, now: float | None = None) -> None:
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
                _monotonic() if now is None else now
            ):
                self._dead_letter(q, msg, "expired")
                continue
            if not c.no_ack:
                ch.held += 1
            ch.ready.append((c, msg))
            # drain_events only ever waits with an empty ready deque, under this lock.
            if len(ch.ready) == 1:
                ch.cond.notify()

    def _release(self, ch: _Channel, count: int) -> None:
        was_full = ch.prefetch and ch.held >= ch.prefetch
        ch.held -= count
        if was_full:
            for c in list(ch.consumers.values()):
                if c.queue.size:
                    self._dispatch(c.queue)

    def qos(self, ch: _Channel, prefetch_count: int) -> None:
        if prefetch_count < 0:
            raise ValueError(f"cannot set qos: prefetch_count {prefetch_count} is negative")
        with self.lock:
            self._check(ch, "set qos")
            ch.prefetch = prefetch_count
            for c in list(ch.consumers.values()):
                self._dispatch(c.queue)

    def consume(
        self,
        ch: _Channel,
        queue: str,
        callback: DeliveryCallback,
        no_ack: bool,
        consumer_tag: str | None,
    ) -> str:
        with self.lock:
            self._check(ch, f"consume from queue {queue!r}")
            q = self._lookup_queue(ch, queue)
            tag = consumer_tag or f"amq.ctag-{next(_consumer_ids)}"
            if tag in ch.consumers:
                self._fail(
                    ch, 530, f"cannot consume from queue {queue!r}: consumer tag {tag!r} is in use"
                )
            c = _Consumer(tag, q, ch, callback, no_ack)
            ch.consumers[tag] = c
            q.consumers.append(c)
            self._dispatch(q)
            return tag

    def cancel(self, ch: _Channel, consumer_tag: str) -> None:
        with self.lock:
            self._check(ch, f"cancel consumer {consumer_tag!r}")
            c = ch.consumers.pop(consumer_tag, None)
            if c is None:
                return
            # Deliveries assigned to it that the application never saw go back to the queue;
            # those it saw stay unacked until acked, rejected or the channel closes.
            mine = [m for k, m in ch.ready if k is c]
            if mine:
                ch.ready = deque(item for item in ch.ready if item[0] is not c)
            q = c.queue
            for msg in reversed(mine):
                if not q.deleted:
                    self._requeue(q, msg)
            self._remove_consumer(c)
            if not c.no_ack and mine:
                self._release(ch, len(mine))
            if not q.deleted:
                self._dispatch(q)

    def _remove_consumer(self, c: _Consumer) -> None:
        q = c.queue
        if c in q.consumers:
            q.consumers.remove(c)
        if q.auto_delete and not q.consumers and not q.deleted:
            self._delete_queue(q)

    def drain(self, ch: _Channel, timeout: float | None) -> int:
        with self.lock:
            self._check(ch, "drain events")
            deadline = None if timeout is None or ch.ready else _monotonic() + timeout
            while not ch.ready and not ch.woken:
                # Expiry runs here too, so a consumer of a dead-letter queue sees expired
                # messages arrive even when nobody publishes or polls the source queue.
                upcoming = self._expire_due()
                if ch.ready:
                    break
                wait = None if deadline is None else deadline - _monotonic()
                if wait is not None and wait <= 0:
                    break
                if upcoming is not None:
                    until = max(upcoming - _monotonic(), 0.0)
                    wait = until if wait is None else min(wait, until)
                ch.cond.wait(wait)
                self._check(ch, "drain events")
            ch.woken = False
            budget = len(ch.ready)
        # At most what was ready on entry, so a busy producer cannot keep us here forever.
        count = 0
        while count < budget:
            with self.lock:
                if not ch.ready or not ch.open:
                    break
                c, msg = ch.ready.popleft()
                tag = ch.next_tag
                ch.next_tag = tag + 1
                if not c.no_ack:
                    ch.unacked[tag] = (c.queue, msg)
                info = {
                    "exchange": msg.exchange,
                    "routing_key": msg.routing_key,
                    "redelivered": msg.redelivered,
                    "consumer_tag": c.tag,
                }
            headers = _copy_map(msg.headers) if msg.headers is not None else None
            c.callback(Delivery(msg.body, headers, _copy_map(msg.properties), info, tag))
            count += 1
        return count

    def wakeup(self, ch: _Channel) -> None:
        with self.lock:
            ch.woken = True
            ch.cond.notify_all()

    def basic_get(self, ch: _Channel, queue: str, no_ack: bool) -> Delivery | None:
        with self.lock:
            self._check(ch, f"get from queue {queue!r}")
            q = self._lookup_queue(ch, queue)
            self._expire_due()
            msg = q.pop()
            if msg is None:
                return None
            tag = ch.next_tag
            ch.next_tag = tag + 1
            if not no_ack:
                ch.unacked[tag] = (q, msg)
                ch.held += 1
            info = {
                "exchange": msg.exchange,
                "routing_key": msg.routing_key,
                "redelivered": msg.redelivered,
                "consumer_tag": None,
                "message_count": q.size,
            }
        headers = _copy_map(msg.headers) if msg.headers is not None else None
        return Delivery(msg.body, headers, _copy_map(msg.properties), info, tag)

    def ack(self, ch: _Channel, delivery_tag: int, multiple: bool) -> None:
        with self.lock:
            self._check(ch, f"ack delivery tag {delivery_tag}")
            unacked = ch.unacked
            if multiple and delivery_tag == 0:
                count = len(unacked)
                unacked.clear()
            elif delivery_tag not in unacked:
                self._fail(ch, 406, f"cannot ack: unknown delivery tag {delivery_tag}")
            elif multiple:
                count = 0
                while unacked and next(iter(unacked)) <= delivery_tag:
                    unacked.popitem(last=False)
                    count += 1
            else:
                del unacked[delivery_tag]
                count = 1
            self._release(ch, count)

    def reject(self, ch: _Channel, delivery_tag: int, requeue: bool) -> None:
        with self.lock:
            self._check(ch, f"reject delivery tag {delivery_tag}")
            entry = ch.unacked.pop(delivery_tag, None)
            if entry is None:
                self._fail(ch, 406, f"cannot reject: unknown delivery tag {delivery_tag}")
            q, msg = entry
            self._release(ch, 1)
            if q.deleted:
                return
            if requeue:
                msg.redelivered = True
                self._requeue(q, msg)
                self._dispatch(q)
            else:
                self._dead_letter(q, msg, "rejected")


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


class MemoryTransport:
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
        self._ch: _Channel | None = None

    def __repr__(self) -> str:
        state = "connected" if self.connected else "not connected"
        return f"<MemoryTransport {self.url!r} vhost={self.vhost!r} {state}>"

    def __enter__(self) -> MemoryTransport:
        self.connect()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

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
        self._ch = self._broker.open_channel(self)

    def close(self) -> None:
        """Close the connection: unacked deliveries go back to their queues (redelivered),
        consumers are cancelled and this connection's exclusive queues are deleted."""
        ch, self._ch = self._ch, None
        if ch is not None and self._broker is not None:
            self._broker.close_connection(ch)

    def _channel(self, operation: str) -> tuple[MemoryBroker, _Channel]:
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
