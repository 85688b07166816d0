"""kombu's ack emulation on Redis: the ``unacked`` hash, the ``unacked_index`` sorted set, restores.

A delivered message is written to both in one ``MULTI`` (``ZADD unacked_index <now> <uuid>``,
``HSET unacked <uuid> [envelope, exchange, routing_key]``); an ack or a drop removes it from
both; a restore takes it out of both and pushes it back to the lists its exchange routes to,
in one ``WATCH``/``MULTI`` transaction so that two restorers never both push it. Entries older
than the visibility timeout belong to nobody any more: any consumer restores them, under the
``unacked_mutex`` lock. These rules and names are kombu's, so kombu and celeriac consumers
restore each other's messages.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import redis
from redis.exceptions import LockError

from celeriac.errors import ChannelError, ProtocolError
from celeriac.transports._redis_envelope import dumps, loads, mark_redelivered, priority_of
from celeriac.transports._redis_keys import Keys

__all__ = ["Unacked"]

logger = logging.getLogger("celeriac.transports.redis")

Lookup = Callable[[str, str], Iterable[str]]


class Unacked:
    """This connection's deliveries not yet acked: integer tag -> kombu's UUID tag.

    Thread-safe: the drain thread adds, any thread settles.

    Args:
        client: a pooled client (never the BRPOP connection).
        keys: the key names.
        lookup: ``lookup(exchange, routing_key)`` -> the queues a restored message goes to.
        visibility_timeout: seconds after which anyone restores an entry.
        mutex_expire: seconds the restore lock lives at most.
    """

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        lookup: Lookup,
        visibility_timeout: float,
        mutex_expire: float,
    ) -> None:
        self._client = client
        self._keys = keys
        self._lookup = lookup
        self._visibility = visibility_timeout
        self._mutex_expire = mutex_expire
        self._tags: OrderedDict[int, str] = OrderedDict()
        self._lock = threading.Lock()
        self._last = 0

    def __len__(self) -> int:
        return len(self._tags)

    def add(self, raw: bytes, uuid_tag: str, exchange: str, routing_key: str) -> int:
        """Record a delivery (one MULTI) and return its integer tag."""
        entry = b"".join((b"[", raw, b",", dumps(exchange), b",", dumps(routing_key), b"]"))
        keys = self._keys
        pipe: Any
        with self._client.pipeline() as pipe:
            pipe.zadd(keys.unacked_index, {uuid_tag: time.time()})
            pipe.hset(keys.unacked, uuid_tag, entry)
            pipe.execute()
        with self._lock:
            self._last += 1
            tag = self._last
            self._tags[tag] = uuid_tag
        return tag

    def track(self, uuid_tag: str) -> int:
        """Give an integer tag to a delivery already recorded in Redis (by the take script)."""
        with self._lock:
            self._last += 1
            tag = self._last
            self._tags[tag] = uuid_tag
        return tag

    def drop(self, uuid_tag: str) -> None:
        """Remove a recorded delivery that is not tracked (it could not be decoded)."""
        self._remove([uuid_tag])

    def next_tag(self) -> int:
        """A tag for a delivery that is not tracked (``no_ack``)."""
        with self._lock:
            self._last += 1
            return self._last

    def _take(self, tag: int, multiple: bool, what: str) -> list[str]:
        with self._lock:
            tags = self._tags
            if multiple:
                taken = []
                while tags:
                    first = next(iter(tags))
                    if first > tag:
                        break
                    taken.append(tags.popitem(last=False)[1])
                if taken or tag <= self._last:
                    return taken
            else:
                uuid_tag = tags.pop(tag, None)
                if uuid_tag is not None:
                    return [uuid_tag]
        raise ChannelError(
            f"cannot {what} delivery tag {tag}: unknown on this connection (PRECONDITION_FAILED)",
            406,
            "PRECONDITION_FAILED - unknown delivery tag",
        )

    def ack(self, tag: int, multiple: bool = False) -> None:
        """Forget the delivery (and, with ``multiple``, every earlier one) in Redis."""
        uuids = self._take(tag, multiple, "ack")
        if uuids:
            self._remove(uuids)

    def reject(self, tag: int, requeue: bool) -> None:
        """Drop it, or put it back at the far end of its queue as kombu does (``LPUSH``)."""
        uuid_tag = self._take(tag, False, "reject")[0]
        if requeue:
            self.restore(uuid_tag, leftmost=True)
        else:
            self._remove([uuid_tag])

    def _remove(self, uuids: list[str]) -> None:
        keys = self._keys
        pipe: Any
        with self._client.pipeline() as pipe:
            pipe.zrem(keys.unacked_index, *uuids)
            pipe.hdel(keys.unacked, *uuids)
            pipe.execute()

    def restore(self, uuid_tag: str, leftmost: bool = False) -> None:
        """Move one entry back to its queue: next to be consumed (``RPUSH``), or last
        (``LPUSH``, ``leftmost``). A missing entry (someone restored it) is skipped."""
        keys = self._keys

        def transaction(pipe: Any) -> None:
            stored = pipe.hget(keys.unacked, uuid_tag)
            targets: list[tuple[str, bytes]] = []
            if stored:
                try:
                    envelope, exchange, routing_key = loads(stored, f"{keys.unacked} {uuid_tag}")
                    mark_redelivered(envelope)
                    data = dumps(envelope)
                except (ProtocolError, ValueError, TypeError) as exc:
                    # kombu drops what it cannot restore, too; say so loudly
                    logger.critical("cannot restore message %s: %s", uuid_tag, exc)
                else:
                    priority = priority_of(envelope)
                    queues = self._lookup(exchange, routing_key)
                    targets = [(keys.queue(q, priority), data) for q in queues]
            pipe.multi()
            pipe.zrem(keys.unacked_index, uuid_tag)
            pipe.hdel(keys.unacked, uuid_tag)
            for key, data in targets:
                (pipe.lpush if leftmost else pipe.rpush)(key, data)

        self._client.transaction(transaction, keys.unacked)

    def restore_all(self) -> int:
        """Put back every delivery of this connection (a clean close); return how many."""
        with self._lock:
            uuids = list(self._tags.values())
            self._tags.clear()
        for uuid_tag in uuids:
            self.restore(uuid_tag)
        return len(uuids)

    def restore_visible(self) -> int:
        """Restore every entry older than the visibility timeout, whoever delivered it, unless
        another consumer holds ``unacked_mutex``; return how many."""
        keys = self._keys
        lock = self._client.lock(keys.unacked_mutex, timeout=self._mutex_expire)
        if not lock.acquire(blocking=False):
            return 0
        try:
            ceiling = time.time() - self._visibility
            due: Any = self._client.zrange(
                keys.unacked_index, ceiling, 0, desc=True, byscore=True, withscores=True
            )
            for uuid_tag, _score in due or ():
                self.restore(uuid_tag.decode() if isinstance(uuid_tag, bytes) else uuid_tag)
            return len(due or ())
        finally:
            with contextlib.suppress(LockError):  # expired meanwhile
                lock.release()
