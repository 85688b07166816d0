"""Key, binding and channel names of kombu's Redis layout, and its exchange routing rules."""

from __future__ import annotations

import re
from functools import lru_cache

from celeriac.transports._redis_envelope import step_for
from celeriac.transports._redis_options import RedisOptions

__all__ = ["Keys", "topic_matches", "topic_pattern"]


class Keys:
    """Every Redis name the transport uses, with ``global_keyprefix`` in front."""

    __slots__ = (
        "binding_prefix",
        "fanout_patterns",
        "fanout_prefix",
        "permanent_prefix",
        "prefix",
        "sep",
        "steps",
        "unacked",
        "unacked_index",
        "unacked_mutex",
    )

    def __init__(self, config: RedisOptions) -> None:
        prefix = config.global_keyprefix
        self.prefix = prefix
        self.sep = config.sep
        self.steps = config.priority_steps
        self.binding_prefix = f"{prefix}_kombu.binding."
        self.permanent_prefix = f"{prefix}_kombu.binding_permanent."
        self.fanout_prefix = f"{prefix}{config.fanout_prefix}"
        self.fanout_patterns = config.fanout_patterns
        self.unacked = prefix + config.unacked_key
        self.unacked_index = prefix + config.unacked_index_key
        self.unacked_mutex = prefix + config.unacked_mutex_key

    def queue(self, queue: str, priority: int = 0) -> str:
        """The list holding ``queue``'s messages of ``priority`` (0-9)."""
        step = step_for(priority, self.steps)
        return f"{self.prefix}{queue}{self.sep}{step}" if step else self.prefix + queue

    def queue_lists(self, queue: str) -> list[str]:
        """Every list of ``queue``, step 0 (consumed first) first."""
        return [self.queue(queue, step) for step in self.steps]

    def queue_of(self, key: str) -> str:
        """The queue a list key belongs to (what BRPOP answers with)."""
        return key[len(self.prefix) :].rsplit(self.sep, 1)[0]

    def binding(self, exchange: str) -> str:
        return self.binding_prefix + exchange

    def permanent(self, exchange: str) -> str:
        return self.permanent_prefix + exchange

    def member(self, routing_key: str, pattern: str, queue: str) -> str:
        return self.sep.join((routing_key, pattern, queue))

    def fanout(self, exchange: str, routing_key: str) -> str:
        """The pub/sub channel a fanout message goes to."""
        if routing_key and self.fanout_patterns:
            return f"{self.fanout_prefix}{exchange}/{routing_key}"
        return self.fanout_prefix + exchange


_WILDCARDS = {"*": r"[^\.]+", "#": r".*?"}


def topic_pattern(routing_key: str) -> str:
    """The regular expression kombu stores in a topic binding for ``routing_key``."""
    escaped = "".join(
        c if c.isalnum() or c in ".#*" else ("\\000" if c == "\0" else "\\" + c)
        for c in routing_key
    )
    words = r"\.".join(_WILDCARDS.get(word, word) for word in escaped.split("."))
    return f"^{words}$"


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def topic_matches(pattern: str, routing_key: str) -> bool:
    """Whether a topic binding's stored pattern takes ``routing_key`` (kombu's ``re.match``)."""
    try:
        return _compiled(pattern).match(routing_key) is not None
    except re.error:
        return False
