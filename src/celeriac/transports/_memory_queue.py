"""Messages and queues of the embedded broker: priority levels, and copies in and out."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from celeriac.transports.base import Delivery

if TYPE_CHECKING:
    from celeriac.transports._memory_channel import Consumer

__all__ = ["Message", "Queue", "copy_map"]


def _copy_value(value: Any) -> Any:
    if type(value) is dict:
        return {k: _copy_value(v) for k, v in value.items()}
    if type(value) is list:
        return [_copy_value(v) for v in value]
    return value


def copy_map(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """Copy headers/properties so that nested dicts and lists are not shared either."""
    return {k: (_copy_value(v) if type(v) in (dict, list) else v) for k, v in mapping.items()}


class Message:
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

    def delivery_info(self, consumer_tag: str | None) -> dict[str, Any]:
        """Return the ``delivery_info`` of delivering this message now (under the broker lock)."""
        return {
            "exchange": self.exchange,
            "routing_key": self.routing_key,
            "redelivered": self.redelivered,
            "consumer_tag": consumer_tag,
        }

    def delivery(self, info: dict[str, Any], tag: int) -> Delivery:
        """Return a delivery of this message with copies the receiver may change freely."""
        headers = copy_map(self.headers) if self.headers is not None else None
        return Delivery(self.body, headers, copy_map(self.properties), info, tag)


class Queue:
    """A queue: one deque per priority level (one level when it is not a priority queue)."""

    __slots__ = (
        "arguments",
        "auto_delete",
        "consumers",
        "deleted",
        "dlrk",
        "dlx",
        "durable",
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
        self.auto_delete = auto_delete
        self.arguments = arguments
        # The connection of an exclusive queue, None for a shared one.
        self.owner = owner
        self.top = max_priority
        self.ttl = ttl
        self.dlx = dlx
        self.dlrk = dlrk
        self.levels: list[deque[Message]] = [deque() for _ in range(max_priority + 1)]
        self.size = 0
        self.consumers: list[Consumer] = []
        self.rr = 0
        self.deleted = False

    def level_of(self, priority: Any) -> int:
        if not self.top or not isinstance(priority, int) or priority <= 0:
            return 0
        return min(priority, self.top)

    def push(self, msg: Message) -> None:
        self.levels[msg.level].append(msg)
        self.size += 1

    def push_front(self, msg: Message) -> None:
        self.levels[msg.level].appendleft(msg)
        self.size += 1

    def peek(self) -> Message | None:
        if self.size:
            for level in reversed(self.levels):
                if level:
                    return level[0]
        return None

    def pop(self) -> Message | None:
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
