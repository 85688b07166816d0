"""The Redis transport's consuming connection: one request at a time, sent and read without
blocking the thread that drains.

While messages are waiting, the request is a Lua script that takes up to the room under the
prefetch limit from the first non-empty list and records each in ``unacked`` and
``unacked_index`` in the same step, exactly as kombu records a delivery, so a connection lost
at any moment leaves every message either in its list or in ``unacked``. Once the lists are
empty it is kombu's ``BRPOP`` (1 s timeout), which waits without polling; the element it
brings is recorded by the transport right after, as kombu does (a connection lost in between
loses that one message, as with kombu), and the script takes over again.

Lists are named in kombu's order: all the step-0 lists first, then step 3... (so a lower
number wins on Redis). The queue that answered moves to the end of the order, so no queue
starves the others (kombu's round robin).
"""

from __future__ import annotations

import logging
import select
import threading
import time
from collections.abc import Callable
from time import monotonic
from typing import Any

import redis

from celeriac.transports._memory_channel import Notifier
from celeriac.transports._redis_keys import Keys

__all__ = ["Poller", "Signal", "connection_factory"]

logger = logging.getLogger("celeriac.transports.redis")

#: one message = (list key, element, kombu's delivery tag if the script recorded it, else "")
Item = tuple[str, bytes, str]

# KEYS: unacked, unacked_index, then the lists in consuming order. ARGV: how many to take,
# the unacked_index score (the client's clock, as kombu's), record ("1") or not ("0").
# Takes from the first non-empty list only, so queues still take turns.
_TAKE = """
local taken = {}
local most = tonumber(ARGV[1])
for i = 3, #KEYS do
  while #taken < most * 3 do
    local item = redis.call('RPOP', KEYS[i])
    if not item then break end
    local tag = ''
    if ARGV[3] == '1' then
      local ok, env = pcall(cjson.decode, item)
      if ok and type(env) == 'table' and type(env.properties) == 'table'
          and type(env.properties.delivery_tag) == 'string'
          and env.properties.delivery_tag ~= '' then
        tag = env.properties.delivery_tag
        local info = env.properties.delivery_info
        local ex, rk = '', ''
        if type(info) == 'table' then
          if type(info.exchange) == 'string' then ex = info.exchange end
          if type(info.routing_key) == 'string' then rk = info.routing_key end
        end
        redis.call('ZADD', KEYS[2], ARGV[2], tag)
        redis.call('HSET', KEYS[1], tag,
          '[' .. item .. ',' .. cjson.encode(ex) .. ',' .. cjson.encode(rk) .. ']')
      end
    end
    taken[#taken + 1] = KEYS[i]
    taken[#taken + 1] = item
    taken[#taken + 1] = tag
  end
  if #taken > 0 then break end
end
return taken
"""


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
        #: the script may run (False after Redis refused it: BRPOP only, as kombu)
        self.scripting = True
        self._taking = True  # the next request is the script (messages may be waiting)
        self._blocking = False  # the request out is BRPOP

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

    def start(self, most: int, record: bool) -> None:
        """Ask for up to ``most`` messages of the consumed queues (nothing when there are
        none); ``record`` makes the script write them to ``unacked``."""
        keys = self._keys
        lists = [keys.queue(queue, step) for step in keys.steps for queue in self.queues]
        if not lists:
            return
        if self._taking and self.scripting:
            score = repr(time.time())
            args = (most, score, "1" if record else "0")
            self._conn.send_command(
                "EVAL", _TAKE, len(lists) + 2, keys.unacked, keys.unacked_index, *lists, *args
            )
            self._blocking = False
        else:
            self._conn.send_command("BRPOP", *lists, self._timeout)
            self._blocking = True
        self.in_flight = True
        self._sent_at = monotonic()

    @property
    def blocking(self) -> bool:
        """The request out is ``BRPOP`` (a close may unblock it)."""
        return self.in_flight and self._blocking

    def ready(self) -> bool:
        """The reply is here (or the socket closed): :meth:`read` will not wait."""
        return bool(self.in_flight and select.select((self._fileno,), (), (), 0)[0])

    def closed(self) -> bool:
        """Readable with no request out: the server closed the connection (or broke the
        protocol); either way the connection is lost."""
        return not self.in_flight and bool(select.select((self._fileno,), (), (), 0)[0])

    def overdue(self) -> bool:
        """No reply for ``timeout + dead_after`` seconds: a half-open connection."""
        return bool(
            self.in_flight
            and self._dead_after
            and monotonic() - self._sent_at > self._timeout + self._dead_after
        )

    def read(self) -> list[Item]:
        """The reply: what the script took, or the element ``BRPOP`` brought (not recorded),
        or nothing (``BRPOP``'s timeout passed, or the lists were empty)."""
        self.in_flight = False
        if self._blocking:
            reply = self._conn.read_response()
            if not reply:
                return []
            self._taking = True  # messages are coming: take them with the script again
            key, item = reply
            return [(_text(key), bytes(item), "")]
        try:
            reply = self._conn.read_response()
        except redis.ResponseError as exc:
            # scripting disabled, or an ACL without EVAL: BRPOP alone, as kombu does it
            self.scripting = False
            logger.warning("redis refused the consuming script (%s); using BRPOP alone", exc)
            return []
        if not reply:
            self._taking = False  # empty: wait with BRPOP
            return []
        return [
            (_text(reply[i]), bytes(reply[i + 1]), _text(reply[i + 2]))
            for i in range(0, len(reply) - 2, 3)
        ]

    def finish(self, wait: float) -> list[Item]:
        """Read the outstanding reply, waiting up to ``wait`` seconds for it (closing): what
        the request already took must not be lost with the socket."""
        if not self.in_flight:
            return []
        if not select.select((self._fileno,), (), (), wait)[0]:
            return []
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


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def connection_factory(pool: Any) -> Callable[[], Any]:
    """A builder of unpooled connections like ``pool``'s, minus redis-py's own health checks
    and retries, which would reconnect behind the loop's back (the transport checks itself)."""
    kwargs = dict(pool.connection_kwargs, health_check_interval=0, retry_on_timeout=False)
    kwargs.pop("retry", None)
    connection_class = pool.connection_class

    def make() -> Any:
        return connection_class(**kwargs)

    return make
