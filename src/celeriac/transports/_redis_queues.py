"""Declaring, binding, purging and deleting on the Redis transport, as kombu keeps them.

Exchanges exist only in the declaring connection (their type decides routing); bindings are
members ``routing_key + sep + pattern + sep + queue`` of ``_kombu.binding.<exchange>`` (and of
kombu 5.7's ``_kombu.binding_permanent.<exchange>`` for queues without ``x-expires``, so its
sweep keeps them); a queue is its lists, one per priority step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import redis

from celeriac.transports._redis_keys import Keys, topic_pattern
from celeriac.transports.base import QueueInfo

__all__ = ["QueueOps"]


class QueueOps:
    """The declaration half of :class:`~celeriac.transports.redis.RedisTransport`."""

    keys: Keys
    _usable: Callable[[str], redis.Redis]
    _call: Callable[..., Any]

    def __init__(self) -> None:
        self._exchange_types: dict[str, str] = {}
        #: queue -> x-expires (ms) of the queues this connection declared with one
        self._expires: dict[str, int] = {}
        self._bindings: set[tuple[str, str, str]] = set()

    def declare_exchange(
        self,
        name: str,
        type: str = "direct",
        durable: bool = True,
        auto_delete: bool = False,
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """Remember the exchange's type for routing (kombu keeps exchanges per connection)."""
        self._usable(f"declare exchange {name!r}")
        self._exchange_types[name] = type or "direct"

    def declare_queue(
        self,
        name: str,
        durable: bool = True,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: Mapping[str, Any] | None = None,
        passive: bool = False,
    ) -> QueueInfo:
        """Nothing to create on Redis; answers the message count over the priority lists.

        ``x-expires`` in ``arguments`` makes publishes refresh the lists' ``PEXPIRE``.
        """
        what = f"declare queue {name!r}"
        client = self._usable(what)
        if not passive:
            expires = _expires_of(arguments)
            if expires is None:
                self._expires.pop(name, None)
            else:
                self._expires[name] = expires
        return QueueInfo(name, self._call(what, self._size, client, name), 0)

    def _size(self, client: redis.Redis, queue: str) -> int:
        pipe: Any
        with client.pipeline(transaction=False) as pipe:
            for key in self.keys.queue_lists(queue):
                pipe.llen(key)
            return sum(int(n) for n in pipe.execute())

    def bind_queue(
        self,
        queue: str,
        exchange: str,
        routing_key: str,
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        what = f"bind queue {queue!r} to {exchange!r}"
        client = self._usable(what)
        self._call(what, self._bind, client, queue, exchange, routing_key, False)
        self._bindings.add((queue, exchange, routing_key))

    def unbind_queue(
        self,
        queue: str,
        exchange: str,
        routing_key: str,
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """Remove one binding (a binding that does not exist is not an error)."""
        what = f"unbind queue {queue!r} from {exchange!r}"
        client = self._usable(what)
        self._call(what, self._bind, client, queue, exchange, routing_key, True)
        self._bindings.discard((queue, exchange, routing_key))

    def _bind(
        self, client: redis.Redis, queue: str, exchange: str, routing_key: str, remove: bool
    ) -> None:
        keys = self.keys
        kind = self._exchange_types.get(exchange, "direct")
        pattern = topic_pattern(routing_key) if kind == "topic" else ""
        member = keys.member(routing_key or "", pattern, queue)
        pipe: Any
        with client.pipeline() as pipe:
            if remove:
                pipe.srem(keys.binding(exchange), member)
                pipe.srem(keys.permanent(exchange), member)
            else:
                pipe.sadd(keys.binding(exchange), member)
                if queue not in self._expires:
                    pipe.sadd(keys.permanent(exchange), member)
            pipe.execute()

    def purge_queue(self, name: str) -> int:
        what = f"purge queue {name!r}"
        return int(self._call(what, self._purge, self._usable(what), name))

    def _purge(self, client: redis.Redis, queue: str) -> int:
        pipe: Any
        with client.pipeline() as pipe:
            for key in self.keys.queue_lists(queue):
                pipe.llen(key)
                pipe.delete(key)
            return sum(int(n) for n in pipe.execute()[::2])

    def delete_queue(self, name: str, if_unused: bool = False, if_empty: bool = False) -> int:
        """Delete the queue's lists and the bindings this connection made for it; return how
        many messages went with it (nothing happens if ``if_empty`` and it has messages)."""
        what = f"delete queue {name!r}"
        client = self._usable(what)
        if if_empty and self._call(what, self._size, client, name):
            return 0
        for binding in [b for b in self._bindings if b[0] == name]:
            self._call(what, self._bind, client, *binding, True)
            self._bindings.discard(binding)
        self._expires.pop(name, None)
        return int(self._call(what, self._purge, client, name))

    def delete_exchange(self, name: str) -> None:
        """Forget the exchange and delete its binding tables."""
        what = f"delete exchange {name!r}"
        client = self._usable(what)
        self._call(what, client.delete, self.keys.binding(name), self.keys.permanent(name))
        self._exchange_types.pop(name, None)
        self._bindings = {b for b in self._bindings if b[1] != name}


def _expires_of(arguments: Mapping[str, Any] | None) -> int | None:
    try:
        return int((arguments or {})["x-expires"])
    except (KeyError, TypeError, ValueError):
        return None
