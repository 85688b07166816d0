"""Exchanges of the embedded broker: bindings and AMQP direct, fanout, topic and headers routing."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["EXCHANGE_TYPES", "Exchange", "builtin_exchanges"]

EXCHANGE_TYPES = frozenset({"direct", "fanout", "topic", "headers"})
# Bounds the per-exchange routing cache: event routing keys carry host names and can be many.
_ROUTE_CACHE_SIZE = 4096


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


class Exchange:
    """An exchange and its bindings, with a cache of where each routing key goes."""

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
        """Return the names of the queues a message with ``key`` and ``headers`` goes to."""
        if not self.name:
            # The default exchange: every queue is bound to it by its own name.
            return (key,)
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


def builtin_exchanges() -> dict[str, Exchange]:
    """Return the exchanges every virtual host starts with: the default one and ``amq.*``."""
    return {
        name: Exchange(name, type, True, False)
        for name, type in (
            ("", "direct"),
            ("amq.direct", "direct"),
            ("amq.fanout", "fanout"),
            ("amq.topic", "topic"),
            ("amq.headers", "headers"),
            ("amq.match", "headers"),
        )
    }
