"""One Redis pub/sub connection per backend, shared by every ``AsyncResult.get`` waiting on it."""

from __future__ import annotations

import logging
import os
import select
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import redis

from celeriac.errors import ConnectionError as BackendConnectionError

__all__ = ["RESYNC", "ResultConsumer", "Waiter"]

logger = logging.getLogger("celeriac.backends.redis")

#: Queued to a waiter when the subscription was re-established: what was published while the
#: connection was down is lost, so the waiter must read the key again.
RESYNC = object()

# A reading waiter returns to its loop at least this often (close(), reconnect back-off, and a
# socket that died without a word are noticed).
_POLL_CAP = 1.0
# Without redis_backend_health_check_interval a silently dropped subscriber (NAT, idle load
# balancer) would leave get() without a timeout waiting forever: ping at least this often.
_DEFAULT_PING_EVERY = 60.0
_READ_ERRORS = (redis.RedisError, OSError, ValueError, AttributeError)


class Waiter:
    """One ``get()`` waiting for one key."""

    __slots__ = ("channel", "error", "items")

    def __init__(self, channel: bytes) -> None:
        self.channel = channel
        self.items: deque[Any] = deque()
        self.error: BaseException | None = None


class _Channel:
    __slots__ = ("outstanding", "subscribed", "waiters")

    def __init__(self) -> None:
        self.waiters: set[Waiter] = set()
        # replies still due for the SUBSCRIBE/UNSUBSCRIBE commands sent for this channel; the
        # server answers in order, so the subscription is live once none is left and the last
        # command sent was SUBSCRIBE (``subscribed``)
        self.outstanding = 0
        self.subscribed = False

    @property
    def live(self) -> bool:
        return self.subscribed and self.outstanding == 0


class ResultConsumer:
    """A subscriber connection read by the waiters themselves, one at a time.

    No thread of its own: a waiter that needs a reply and finds nobody reading becomes the
    reader (it waits for the socket without the lock, then reads and hands every message to its
    waiter); the others sleep on a condition. A lone ``get()`` thus reads its own message, with
    no thread hand-off on the way (measured: a hand-off to a reader thread cost ~0.3 ms).
    Subscribing and unsubscribing only send, under the lock.

    After a lost connection the reader reconnects, subscribes again and tells each waiter to
    read its key again (:data:`RESYNC`); after ``reconnect_budget`` failed attempts every
    waiter gets :class:`celeriac.errors.ConnectionError`.
    """

    #: The process that made this consumer; after a fork the child must make its own.
    pid: int

    def __init__(
        self,
        pool: redis.ConnectionPool,
        describe: str,
        reconnect_budget: float,
        backoff: Callable[[int], float],
        ping_every: float | None,
    ) -> None:
        self._pool = pool
        self._describe = describe
        self._budget = reconnect_budget
        self._backoff = backoff
        self._ping_every = ping_every or _DEFAULT_PING_EVERY
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._closed = False
        self._reading = False
        self._channels: dict[bytes, _Channel] = {}
        # subscribed channels nobody waits on any more: their UNSUBSCRIBE goes out with the next
        # command or read, not on the way out of get() (a send costs ~50 us on loopback)
        self._idle: set[bytes] = set()
        self._conn: Any = None
        self.pid = os.getpid()
        self._last_traffic = 0.0
        self._ping_sent: float | None = None
        self._lost: BaseException | None = None
        self._failures = 0
        self._retry_at = 0.0

    # -- used by waiters
    def watch(self, key: str) -> Waiter:
        """Subscribe to ``key`` (unless another waiter has) and return a waiter for it."""
        channel = key.encode()
        with self._lock:
            self._connect()
            waiter = Waiter(channel)
            entry = self._channels.get(channel)
            if entry is None:
                entry = self._channels[channel] = _Channel()
            entry.waiters.add(waiter)
            self._idle.discard(channel)
            if not entry.subscribed:
                self._send([(entry, "SUBSCRIBE", channel)])
        return waiter

    def unwatch(self, waiter: Waiter) -> None:
        with self._lock:
            entry = self._channels.get(waiter.channel)
            if entry is None or waiter not in entry.waiters:
                return
            entry.waiters.discard(waiter)
            if entry.waiters:
                return
            if entry.subscribed:
                self._idle.add(waiter.channel)
            elif entry.outstanding == 0:
                del self._channels[waiter.channel]

    def wait_live(self, waiter: Waiter, deadline: float | None) -> bool:
        """Until the server confirmed the subscription; False when the deadline passed.

        Payloads queued so far are dropped: the caller reads the key next, which is newer.
        """

        def live() -> bool:
            entry = self._channels.get(waiter.channel)
            if entry is None or not entry.live:
                return False
            waiter.items.clear()
            return True

        return self._wait(waiter, deadline, live)

    def next_item(self, waiter: Waiter, deadline: float | None) -> Any:
        """The next published payload, :data:`RESYNC`, or None when the deadline passed."""
        if not self._wait(waiter, deadline, lambda: bool(waiter.items)):
            return None
        with self._lock:
            return waiter.items.popleft()

    def close(self) -> None:
        """Close the subscriber connection; waiters get a ConnectionError."""
        with self._lock:
            self._closed = True
            self._fail_all(f"{self._describe} was closed")
            self._drop_connection()

    # -- waiting and reading
    def _wait(self, waiter: Waiter, deadline: float | None, ready: Callable[[], bool]) -> bool:
        with self._lock:
            while True:
                if waiter.error is not None:
                    raise waiter.error
                if ready():
                    return True
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                if self._reading:
                    self._changed.wait(remaining)
                    continue
                if self._conn is None:
                    raise BackendConnectionError(f"{self._describe}: not subscribed")
                self._reading = True
                try:
                    self._read_turn(_POLL_CAP if remaining is None else min(remaining, _POLL_CAP))
                finally:
                    self._reading = False
                    self._changed.notify_all()

    def _read_turn(self, timeout: float) -> None:
        """Wait up to ``timeout`` for the socket (lock released meanwhile), then read it all."""
        if self._closed:
            return
        if self._lost is not None:
            self._reconnect_turn(timeout)
            return
        try:
            sock = _socket(self._conn)
            if sock is None:
                raise redis.ConnectionError("subscriber connection is closed")
            if self._idle:
                self._send([])
            anchor = self._ping_sent if self._ping_sent is not None else self._last_traffic
            wait = max(0.0, min(timeout, anchor + self._ping_every - time.monotonic()))
            self._lock.release()
            try:
                readable = _readable(sock, wait)
            finally:
                self._lock.acquire()
            if self._closed:
                return
            if _socket(self._conn) is not sock:
                raise redis.ConnectionError("subscriber connection was reset")
            if readable:
                self._drain()
            self._keepalive()
        except _READ_ERRORS as exc:
            if not self._closed and self._conn is not None:
                logger.warning("subscriber connection to %s lost: %s", self._describe, exc)
                self._lost = exc
                self._failures = 0
                self._retry_at = time.monotonic()
                self._reconnect_turn(0.0)

    def _drain(self) -> None:
        conn = self._conn
        while conn.can_read(timeout=0):
            self._dispatch(conn.read_response(push_request=True))
        self._last_traffic = time.monotonic()

    def _dispatch(self, reply: Any) -> None:
        if not isinstance(reply, list) or len(reply) < 2:
            self._ping_sent = None  # +PONG when nothing is subscribed
            return
        kind = _as_bytes(reply[0])
        if kind == b"message":
            entry = self._channels.get(_as_bytes(reply[1]))
            if entry is not None:
                for waiter in entry.waiters:
                    waiter.items.append(reply[2])
        elif kind in (b"subscribe", b"unsubscribe"):
            channel = _as_bytes(reply[1])
            entry = self._channels.get(channel)
            if entry is not None:
                entry.outstanding = max(0, entry.outstanding - 1)
                if not (entry.waiters or entry.outstanding or entry.subscribed):
                    del self._channels[channel]
        else:  # ["pong", ""] while subscribed
            self._ping_sent = None

    def _keepalive(self) -> None:
        now = time.monotonic()
        if self._ping_sent is not None:
            if now - self._ping_sent >= self._ping_every:
                raise redis.TimeoutError(f"no reply to PING within {self._ping_every}s")
        elif now - self._last_traffic >= self._ping_every:
            self._conn.send_command("PING", check_health=False)
            self._ping_sent = now

    def _reconnect_turn(self, timeout: float) -> None:
        """One reconnect attempt when its back-off has passed (lock held, released to sleep)."""
        delay = self._retry_at - time.monotonic()
        if delay > 0:
            self._lock.release()
            try:
                time.sleep(min(delay, timeout))
            finally:
                self._lock.acquire()
            return
        try:
            self._reconnect()
        except _READ_ERRORS as exc:
            self._failures += 1
            if self._failures > self._budget:
                logger.error("lost the subscriber connection to %s: %s", self._describe, exc)
                self._fail_all(f"lost the subscriber connection to {self._describe}: {exc}")
                self._drop_connection()
                return
            delay = self._backoff(self._failures)
            self._retry_at = time.monotonic() + delay
            logger.warning(
                "cannot reconnect to %s (%s); retry %d in %.3fs",
                self._describe,
                exc,
                self._failures,
                delay,
            )
            return
        logger.info("re-subscribed to %s", self._describe)

    def _reconnect(self) -> None:
        conn = self._conn
        conn.disconnect()
        conn.connect()
        self._lost = None
        self._last_traffic = time.monotonic()
        self._ping_sent = None
        self._idle.clear()
        commands: list[tuple[_Channel, str, bytes]] = []
        for channel, entry in list(self._channels.items()):
            if not entry.waiters:
                del self._channels[channel]
                continue
            entry.outstanding = 0
            entry.subscribed = False
            commands.append((entry, "SUBSCRIBE", channel))
            for waiter in entry.waiters:
                waiter.items.append(RESYNC)
        self._send(commands)

    # -- connection (lock held)
    def _connect(self) -> None:
        if self._closed:
            raise BackendConnectionError(f"{self._describe} is closed")
        if self._conn is not None:
            return
        try:
            self._conn = _get_connection(self._pool)
        except redis.RedisError as exc:
            raise BackendConnectionError(
                f"cannot subscribe to results: {self._describe} is unreachable: {exc}"
            ) from exc
        self._last_traffic = time.monotonic()
        self._ping_sent = None
        self._lost = None

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        self._lost = None
        if conn is not None and self.pid == os.getpid():
            conn.disconnect()
            self._pool.release(conn)

    def _send(self, commands: list[tuple[_Channel, str, bytes]]) -> None:
        """Send ``commands`` and the UNSUBSCRIBEs due, in one write."""
        for channel in self._idle:
            entry = self._channels.get(channel)
            if entry is not None and entry.subscribed and not entry.waiters:
                commands.insert(0, (entry, "UNSUBSCRIBE", channel))
        self._idle.clear()
        for entry, name, _ in commands:
            entry.outstanding += 1
            entry.subscribed = name == "SUBSCRIBE"
        if not commands or self._lost is not None or _socket(self._conn) is None:
            return  # the reader reconnects and subscribes again
        try:
            packed = self._conn.pack_commands([(name, channel) for _, name, channel in commands])
            self._conn.send_packed_command(packed, check_health=False)
        except redis.RedisError as exc:
            # redis-py closed the socket; the next read turn reconnects and re-subscribes
            logger.debug("sending to %s failed: %s", self._describe, exc)

    def _fail_all(self, message: str) -> None:
        for entry in self._channels.values():
            for waiter in entry.waiters:
                waiter.error = BackendConnectionError(message)
        self._channels.clear()
        self._idle.clear()
        self._changed.notify_all()


def _get_connection(pool: redis.ConnectionPool) -> Any:
    try:
        return pool.get_connection()
    except TypeError:  # redis-py < 5.3 wants the command name
        return pool.get_connection("SUBSCRIBE")


def _socket(conn: Any) -> Any:
    # redis-py keeps the socket private; waiting on it outside the lock is the only way to sleep
    # until a message arrives without holding up subscribers. None means disconnected.
    return getattr(conn, "_sock", None) if conn is not None else None


def _readable(sock: Any, timeout: float) -> bool:
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(timeout * 1000))
    except AttributeError:  # no poll() (Windows)
        readable, _, _ = select.select([sock], [], [], timeout)
        return bool(readable)
    except (OSError, ValueError):
        return True  # closed under us: the locked read reports it


def _as_bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()
