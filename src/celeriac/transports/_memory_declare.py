"""The embedded broker's declarations: exchanges, queues and their arguments, bindings, deletion."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from typing import Any

from celeriac.transports._memory_channel import Channel
from celeriac.transports._memory_exchange import EXCHANGE_TYPES, Exchange
from celeriac.transports._memory_queue import Queue
from celeriac.transports._memory_vhost import VHost
from celeriac.transports.base import QueueInfo

__all__ = ["Declarations"]

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


class Declarations(VHost):
    """The AMQP ``exchange.*`` and ``queue.*`` methods of a virtual host."""

    def declare_exchange(
        self,
        ch: Channel,
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
            if type not in EXCHANGE_TYPES:
                self._fail(ch, 503, f"cannot declare exchange {name!r}: unknown type {type!r}")
            ex = self._exchanges.get(name)
            if ex is not None:
                pairs = (
                    ("type", ex.type, type),
                    ("durable", ex.durable, durable),
                    ("auto_delete", ex.auto_delete, auto_delete),
                )
                self._check_equivalent(ch, "exchange", name, pairs)
                return
            if name.startswith("amq."):
                self._fail(ch, 403, f"cannot declare exchange {name!r}: 'amq.' is reserved")
            self._exchanges[name] = Exchange(name, type, durable, auto_delete)

    def declare_queue(
        self,
        ch: Channel,
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
            # A passive declare of a missing queue fails; _lookup_queue checks access too.
            q = self._lookup_queue(ch, name) if passive else self._queues.get(name)
            args = dict(arguments or {})
            if q is not None:
                if not passive:
                    self._check_access(ch, q)
                    pairs: list[tuple[str, Any, Any]] = [
                        ("durable", q.durable, durable),
                        ("auto_delete", q.auto_delete, auto_delete),
                    ]
                    pairs += [(k, q.arguments.get(k), args.get(k)) for k in _EQUIVALENT_ARGS]
                    self._check_equivalent(ch, "queue", name, pairs)
                return QueueInfo(q.name, q.size, len(q.consumers))
            if not name:
                name = "amq.gen-" + secrets.token_urlsafe(16)
            elif name.startswith("amq."):
                self._fail(ch, 403, f"cannot declare queue {name!r}: 'amq.' is reserved")
            self._queues[name] = self._new_queue(ch, name, durable, exclusive, auto_delete, args)
            return QueueInfo(name, 0, 0)

    def _new_queue(
        self,
        ch: Channel,
        name: str,
        durable: bool,
        exclusive: bool,
        auto_delete: bool,
        args: dict[str, Any],
    ) -> Queue:
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

        return Queue(
            name,
            durable,
            auto_delete,
            args,
            owner=ch.owner if exclusive else None,
            max_priority=arg("x-max-priority", int, 0, 255) or 0,
            ttl=arg("x-message-ttl", int),
            dlx=arg("x-dead-letter-exchange", str),
            dlrk=arg("x-dead-letter-routing-key", str),
        )

    def _check_equivalent(
        self, ch: Channel, kind: str, name: str, pairs: Iterable[tuple[str, Any, Any]]
    ) -> None:
        """Refuse a redeclare whose ``(arg, current, received)`` values differ, as RabbitMQ does."""
        for arg, have, want in pairs:
            if have != want:
                self._fail(
                    ch,
                    406,
                    f"inequivalent arg {arg!r} for {kind} {name!r} in vhost {self.name!r}: "
                    f"received {want!r} but current is {have!r}",
                )

    def bind_queue(
        self,
        ch: Channel,
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

    def purge_queue(self, ch: Channel, name: str) -> int:
        with self.lock:
            self._check(ch, f"purge queue {name!r}")
            q = self._lookup_queue(ch, name)
            self._ttl_queues.pop(q, None)
            return q.clear()

    def delete_queue(self, ch: Channel, name: str, if_unused: bool, if_empty: bool) -> int:
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

    def delete_exchange(self, ch: Channel, name: str) -> None:
        with self.lock:
            self._check(ch, f"delete exchange {name!r}")
            if not name or name.startswith("amq."):
                self._fail(ch, 403, f"cannot delete exchange {name!r}: it is built in")
            self._exchanges.pop(name, None)
