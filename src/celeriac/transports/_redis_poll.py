"""The Redis transport's consuming connection: one ``BRPOP`` at a time, sent and read without
blocking the thread that drains.

``BRPOP`` names every list of every consumed queue, all the step-0 lists first, then step 3...
(kombu's order, so a lower number wins on Redis), with a 1 s timeout. The queue that answered
moves to the end of the order, so no queue starves the others (kombu's round robin).
"""

from __future__ import annotations

import select
import threading
from collections.abc import Callable
from time import monotonic
from typing import Any

import redis

from celeriac.transports._memory_channel import Notifier
from celeriac.transports._redis_keys import Keys

__all__ = ["Poller", "Signal", "connection_factory"]


class Signal:
    """A pipe that is readable while ``drain_events`` has work it cannot see on the socket
    (a wakeup, room under the prefetch limit, a consumer to start). Safe from any thread."""

    __slots__ = ("_lock", "_notifier")

    def __init__(self) -> None:
        self._notifier = Notifier()
        self._lock = threading.Lock()

    def fileno(self) -> int:
        return self._notifier.fileno()

    def set(self) -> None:
        with self._lock:
            self._notifier.set()

    def clear(self) -> None:
        with self._lock:
            self._notifier.clear()

    def close(self) -> None:
        with self._lock:
            self._notifier.close()


class Poller:
    """Owns the connection that ``BRPOP`` blocks on (not a pooled one).

    It never reconnects by itself: its socket is what the worker's loop waits on, so a new one
    must come with a new transport. Any error leaves it unusable.

    Args:
        connection: the redis-py connection (not yet connected).
        keys: the key names.
        timeout: the ``BRPOP`` timeout in whole seconds.
        dead_after: seconds beyond ``timeout`` without a reply that mean the connection is
            dead (0: never).
    """

    def __init__(self, connection: Any, keys: Keys, timeout: int, dead_after: float) -> None:
        self._conn = connection
        self._keys = keys
        self._timeout = timeout
        self._dead_after = dead_after
        self.queues: list[str] = []
        self.in_flight = False
        self._sent_at = 0.0
        self._fileno = -1
        self.client_id: int | None = None

    def connect(self) -> None:
        conn = self._conn
        conn.connect()
        self._fileno = conn._sock.fileno()
        # lets a close end a waiting BRPOP at once (CLIENT UNBLOCK) instead of waiting it out
        conn.send_command("CLIENT", "ID")
        try:
            self.client_id = int(conn.read_response())
        except redis.ResponseError:  # refused by an ACL or a Redis-like server: wait it out
            self.client_id = None

    def fileno(self) -> int:
        return self._fileno

    def start(self) -> None:
        """Send ``BRPOP`` over the consumed queues (nothing when there are none)."""
        keys = self._keys
        lists = [keys.queue(queue, step) for step in keys.steps for queue in self.queues]
        if not lists:
            return
        self._conn.send_command("BRPOP", *lists, self._timeout)
        self.in_flight = True
        self._sent_at = monotonic()

    def ready(self) -> bool:
        """The reply is here (or the socket closed): :meth:`read` will not wait."""
        return bool(self.in_flight and select.select((self._fileno,), (), (), 0)[0])

    def overdue(self) -> bool:
        """No reply for ``timeout + dead_after`` seconds: a half-open connection."""
        return bool(
            self.in_flight
            and self._dead_after
            and monotonic() - self._sent_at > self._timeout + self._dead_after
        )

    def read(self) -> tuple[str, bytes] | None:
        """The reply: ``(list key, element)``, or ``None`` when the timeout passed."""
        self.in_flight = False
        reply = self._conn.read_response()
        if not reply:
            return None
        key, item = reply
        return (key.decode() if isinstance(key, bytes) else str(key)), bytes(item)

    def finish(self, wait: float) -> tuple[str, bytes] | None:
        """Read the outstanding reply, waiting up to ``wait`` seconds for it (closing): an
        element ``BRPOP`` already took must not be lost with the socket."""
        if not self.in_flight:
            return None
        if not select.select((self._fileno,), (), (), wait)[0]:
            return None
        return self.read()

    def rotate(self, queue: str) -> None:
        """Move ``queue`` to the end of the order (it just answered)."""
        queues = self.queues
        if len(queues) > 1 and queue in queues:
            queues.remove(queue)
            queues.append(queue)

    def close(self) -> None:
        self.in_flight = False
        self._conn.disconnect()


def connection_factory(pool: Any) -> Callable[[], Any]:
    """A builder of unpooled connections like ``pool``'s, minus redis-py's own health checks
    and retries, which would reconnect behind the loop's back (the transport checks itself)."""
    kwargs = dict(pool.connection_kwargs, health_check_interval=0, retry_on_timeout=False)
    kwargs.pop("retry", None)
    connection_class = pool.connection_class

    def make() -> Any:
        return connection_class(**kwargs)

    return make
