"""The Redis broker transport (``redis://``, ``rediss://``, ``redis+socket://``), kombu's layout.

Messages, bindings and the ack bookkeeping are stored exactly as kombu's Redis transport stores
them (Celery's broker on Redis), so Celery clients and workers share queues with celeriac ones:
a queue is a list per priority step, ``LPUSH``ed and consumed with ``BRPOP``; a delivery waits
in the ``unacked`` hash until acked; named exchanges route through the
``_kombu.binding.<exchange>`` sets; fanout exchanges publish on pub/sub channels.

How consuming meets the worker's select loop: the transport holds one connection of its own
for ``BRPOP`` and sends it *without waiting*; :meth:`RedisTransport.filenos` returns that
socket and a pipe. The socket turns readable when Redis answers (a message, or nil after the
1 s timeout); the pipe when there is work the socket cannot show: a :meth:`wakeup`, a consumer
added, or an ack that makes room under the prefetch limit so the next ``BRPOP`` may go out.
``drain_events(0)`` reads the reply if it is there, dispatches it, sends the next ``BRPOP``
when the prefetch limit allows, empties the pipe, and returns. One ``BRPOP`` brings one
message, so at most ``prefetch_count`` deliveries are ever unacked.

What users must know:

* **At least once, by visibility timeout.** A delivery stays in ``unacked`` until acked. A
  clean :meth:`RedisTransport.close` puts this connection's unacked deliveries back at the
  head of their queues. After a crash (SIGKILL, power loss) they come back only when some
  consumer sees them older than ``visibility_timeout`` (default 3600 s); a task running
  longer than that runs twice. A message ``BRPOP`` took in the instant before a crash, not
  yet written to ``unacked``, is lost (kombu has the same window).
* **Passive declares** never fail: Redis cannot tell an empty queue from a missing one, so
  ``declare_queue(passive=True)`` answers the message count (0 for both).
* **Errors**: Redis unreachable or gone raises :class:`~celeriac.errors.ConnectionError` and
  every later call raises until :meth:`RedisTransport.connect` (the worker then reconnects);
  a command Redis refuses raises :class:`~celeriac.errors.ChannelError`.
* Fanout exchanges can be published to (``PUBLISH``) but not consumed from.
"""

from __future__ import annotations

import itertools
import logging
import select
import uuid
from collections.abc import Callable, Iterable, Mapping
from time import monotonic
from typing import Any, TypeVar

import redis

from celeriac._redis_params import check_params
from celeriac.errors import ChannelError, ConnectionError, ProtocolError, TransportError
from celeriac.transports._redis_acks import Unacked
from celeriac.transports._redis_envelope import (
    INTERNAL_PROPERTIES,
    body_of,
    dumps,
    loads,
    make_envelope,
    priority_of,
)
from celeriac.transports._redis_keys import Keys, topic_matches
from celeriac.transports._redis_options import parse_options
from celeriac.transports._redis_poll import Poller, Signal, connection_factory
from celeriac.transports._redis_queues import QueueOps
from celeriac.transports.base import Delivery, DeliveryCallback
from celeriac.urls import mask_url

__all__ = ["RedisTransport"]

logger = logging.getLogger("celeriac.transports.redis")

T = TypeVar("T")
_consumer_numbers = itertools.count(1)
_LOST = (redis.ConnectionError, redis.TimeoutError, OSError)


class RedisTransport(QueueOps):
    """A connection to a Redis broker, in kombu's layout (see the module docstring).

    Args:
        url: ``redis://[user:password@]host[:port][/db]``, ``rediss://`` for TLS (query
            arguments such as ``ssl_cert_reqs``, ``ssl_ca_certs``), or
            ``redis+socket:///path/to/socket?virtual_host=<db>``.
        **options: kombu's transport options: ``visibility_timeout`` (3600),
            ``global_keyprefix`` (``""``), ``socket_timeout``, ``socket_connect_timeout``
            (else ``connect_timeout``), ``health_check_interval`` (25), ``priority_steps``
            (``[0, 3, 6, 9]``), ``sep``, ``unacked_restore_interval`` (10 s between sweeps for
            expired deliveries), ``max_connections`` (10), ``fanout_prefix``,
            ``fanout_patterns``, ``ssl`` (``broker_use_ssl``). Other names are ignored.
    """

    def __init__(self, url: str = "redis://", **options: Any) -> None:
        self.url = url
        self.options = options
        self.masked_url = mask_url(url)
        self.params, self.config = parse_options(url, options)
        self.keys = Keys(self.config)
        self._pool: redis.ConnectionPool | None = None
        self._client: redis.Redis | None = None
        self._poller: Poller | None = None
        self._unacked: Unacked | None = None
        self._signal: Signal | None = None
        self._broken = False
        self._woken = False
        self._prefetch = 0
        self._consumers: dict[str, tuple[str, DeliveryCallback, bool]] = {}
        self._by_queue: dict[str, str] = {}
        self._next_restore = 0.0
        super().__init__()

    def __repr__(self) -> str:
        state = "connected" if self.connected else "not connected"
        return f"<RedisTransport {self.masked_url} {state}>"

    def __enter__(self) -> RedisTransport:
        self.connect()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- connection ------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._client is not None and not self._broken

    def connect(self) -> None:
        """Connect (idempotent); after a lost connection, a new one with new descriptors.

        Consumers and qos belong to the connection: consume again after a reconnect.

        Raises:
            ConnectionError: Redis cannot be reached or refused the credentials.
        """
        if self.connected:
            return
        self._dispose()
        pool = redis.ConnectionPool(**self.params)
        check_params(pool, "broker", self.masked_url)
        client = redis.Redis(connection_pool=pool)
        poller = Poller(
            connection_factory(pool)(),
            self.keys,
            self.config.brpop_timeout,
            self.config.health_check_interval,
        )
        try:
            client.ping()
            poller.connect()
        except (redis.RedisError, OSError) as exc:
            pool.disconnect()
            poller.close()
            raise ConnectionError(
                f"cannot connect to redis broker {self.masked_url}: {exc}"
            ) from exc
        config = self.config
        self._pool, self._client, self._poller = pool, client, poller
        self._unacked = Unacked(
            client, self.keys, self._lookup, config.visibility_timeout, config.unacked_mutex_expire
        )
        self._signal = Signal()
        self._broken = False
        self._woken = False
        self._next_restore = 0.0

    def close(self) -> None:
        """Put this connection's unacked deliveries back at the head of their queues, then
        disconnect. Never raises; what cannot be put back now comes back after the
        visibility timeout."""
        poller, unacked, pool = self._poller, self._unacked, self._pool
        try:
            if poller is not None and not self._broken:
                if poller.in_flight and poller.client_id is not None and self._client:
                    # the BRPOP answers now: nil, or the element it had already taken
                    self._client.client_unblock(poller.client_id)
                got = poller.finish(self.config.brpop_timeout + 1.0)
                if got is not None and self._client is not None:
                    self._client.rpush(got[0], got[1])  # back where BRPOP took it from
            if unacked is not None:
                restored = unacked.restore_all()
                if restored:
                    logger.info("restored %d unacked messages to %s", restored, self.masked_url)
        except (redis.RedisError, OSError, TransportError) as exc:
            logger.warning(
                "cannot restore unacked messages to %s (%s); they return after the "
                "visibility timeout (%gs)",
                self.masked_url,
                exc,
                self.config.visibility_timeout,
            )
        finally:
            self._dispose()
            del pool

    def _dispose(self) -> None:
        poller, self._poller = self._poller, None
        pool, self._pool = self._pool, None
        signal, self._signal = self._signal, None
        self._client = None
        self._unacked = None
        self._consumers.clear()
        self._by_queue.clear()
        self._prefetch = 0
        for close in (
            poller.close if poller else None,
            pool.disconnect if pool else None,
            signal.close if signal else None,
        ):
            if close is not None:
                try:
                    close()
                except (redis.RedisError, OSError) as exc:
                    logger.debug("closing %s: %s", self.masked_url, exc)

    def _usable(self, what: str) -> redis.Redis:
        client = self._client
        if client is None or self._broken:
            raise ConnectionError(f"cannot {what}: redis broker {self.masked_url} is not connected")
        return client

    def _call(self, what: str, func: Callable[..., T], *args: Any) -> T:
        try:
            return func(*args)
        except _LOST as exc:
            self._broken = True
            raise ConnectionError(
                f"cannot {what}: lost redis broker {self.masked_url}: {exc}"
            ) from exc
        except redis.RedisError as exc:
            raise ChannelError(f"cannot {what} on redis broker {self.masked_url}: {exc}") from exc

    # -- routing ---------------------------------------------------------------------------

    def _lookup(self, exchange: str, routing_key: str) -> list[str]:
        """The queues a message for ``exchange``/``routing_key`` goes to (kombu's
        ``_lookup``): the routing key itself for ``''``, else the binding table's matches.
        The exchange's type is what this connection declared (direct when unknown)."""
        if not exchange:
            return [routing_key]
        assert self._client is not None
        members: Any = self._client.smembers(self.keys.binding(exchange))
        kind = self._exchange_types.get(exchange, "direct")
        sep = self.keys.sep
        found: list[str] = []
        for member in members:
            rkey, pattern, queue = (member.decode() if isinstance(member, bytes) else member).split(
                sep
            )
            if kind == "fanout":
                hit = True
            elif kind == "topic":
                hit = topic_matches(pattern, routing_key)
            else:
                hit = rkey == routing_key
            if hit and queue not in found:
                found.append(queue)
        return sorted(found)

    def publish(
        self,
        body: bytes,
        exchange: str,
        routing_key: str,
        headers: Mapping[str, Any] | None = None,
        properties: Mapping[str, Any] | None = None,
        mandatory: bool = False,
    ) -> None:
        """``LPUSH`` kombu's envelope to each queue the exchange routes to (``PUBLISH`` for a
        fanout exchange). Unroutable: dropped, or :class:`ChannelError` (312) if ``mandatory``.
        """
        what = f"publish to {exchange or 'amq.default'}/{routing_key}"
        client = self._usable(what)
        envelope = make_envelope(
            bytes(body), exchange, routing_key, headers, properties, self.config.body_encoding
        )
        data = dumps(envelope)
        if exchange and self._exchange_types.get(exchange) == "fanout":
            self._call(what, client.publish, self.keys.fanout(exchange, routing_key), data)
            return
        queues = self._call(what, self._lookup, exchange, routing_key)
        if not queues:
            if mandatory:
                raise ChannelError(f"cannot {what}: NO_ROUTE (312)", 312, "NO_ROUTE")
            return
        priority = priority_of(envelope)
        keys = self.keys
        if len(queues) == 1 and queues[0] not in self._expires:
            self._call(what, client.lpush, keys.queue(queues[0], priority), data)
            return
        self._call(what, self._push_many, client, queues, priority, data)

    def _push_many(
        self, client: redis.Redis, queues: list[str], priority: int, data: bytes
    ) -> None:
        keys = self.keys
        pipe: Any
        with client.pipeline() as pipe:
            for queue in queues:
                pipe.lpush(keys.queue(queue, priority), data)
                expires = self._expires.get(queue)
                if expires is not None:
                    for key in keys.queue_lists(queue):
                        pipe.pexpire(key, expires)
            pipe.execute()

    # -- consuming -------------------------------------------------------------------------

    def qos(self, prefetch_count: int, global_: bool = False) -> None:
        """Limit this connection's unacked deliveries to ``prefetch_count`` (0 = unlimited)."""
        if prefetch_count < 0:
            raise ValueError(f"cannot set qos: prefetch_count {prefetch_count} is negative")
        self._usable(f"set qos {prefetch_count}")
        self._prefetch = prefetch_count
        self._poke()

    def consume(
        self,
        queue: str,
        callback: DeliveryCallback,
        no_ack: bool = False,
        consumer_tag: str | None = None,
    ) -> str:
        self._usable(f"consume from queue {queue!r}")
        assert self._poller is not None
        tag = consumer_tag or f"celeriac.{next(_consumer_numbers)}"
        if tag in self._consumers:
            raise ChannelError(
                f"cannot consume from queue {queue!r}: consumer tag {tag!r} is in use (530)",
                530,
                "NOT_ALLOWED - attempt to reuse consumer tag",
            )
        self._consumers[tag] = (queue, callback, no_ack)
        self._by_queue[queue] = tag
        if queue not in self._poller.queues:
            self._poller.queues.append(queue)
        self._poke()
        return tag

    def cancel(self, consumer_tag: str) -> None:
        """Stop a consumer; a message ``BRPOP`` brings for it later goes back to its list."""
        entry = self._consumers.pop(consumer_tag, None)
        if entry is None:
            return
        queue = entry[0]
        if self._by_queue.get(queue) == consumer_tag:
            del self._by_queue[queue]
            for tag, (other, _, _) in self._consumers.items():
                if other == queue:
                    self._by_queue[queue] = tag
                    break
        poller = self._poller
        if poller is not None and queue not in self._by_queue and queue in poller.queues:
            poller.queues.remove(queue)

    def _can_consume(self) -> bool:
        unacked = self._unacked
        return not self._prefetch or unacked is None or len(unacked) < self._prefetch

    def _poke(self) -> None:
        signal = self._signal
        if signal is not None:
            signal.set()

    def drain_events(self, timeout: float | None = None) -> int:
        """Dispatch what Redis delivered, waiting up to ``timeout`` seconds (``None``: forever)
        for the first; return how many ran (0 on timeout or after :meth:`wakeup`).

        Raises:
            ConnectionError: the connection was lost, or ``BRPOP`` went unanswered for longer
                than its timeout plus ``health_check_interval``.
        """
        self._usable("drain events")
        deadline = None if timeout is None else monotonic() + timeout
        while True:
            count = self._drain_once()
            if count:
                return count
            if self._woken:
                self._woken = False
                return 0
            wait = 1.0 if deadline is None else min(1.0, deadline - monotonic())
            if wait <= 0:
                return 0
            poller, signal = self._poller, self._signal
            if poller is None or signal is None:
                self._usable("drain events")
                return 0
            fds = [signal.fileno()]
            if poller.in_flight:
                fds.append(poller.fileno())
            try:
                select_readable(fds, wait)
            except OSError as exc:  # closed by another thread
                raise ConnectionError(f"cannot drain events from {self.masked_url}: {exc}") from exc

    def _drain_once(self) -> int:
        poller, signal, unacked = self._poller, self._signal, self._unacked
        if poller is None or signal is None or unacked is None:
            self._usable("drain events")
            return 0
        signal.clear()
        count = 0
        if poller.in_flight:
            if poller.ready():
                got = self._call("read from redis (BRPOP)", poller.read)
                if got is not None:
                    count = self._deliver(got[0], got[1])
            elif poller.overdue():
                self._broken = True
                raise ConnectionError(
                    f"cannot drain events: redis broker {self.masked_url} did not answer BRPOP "
                    f"for {self.config.brpop_timeout + self.config.health_check_interval:g}s"
                )
        if self._consumers:
            now = monotonic()
            if now >= self._next_restore:
                self._next_restore = now + self.config.unacked_restore_interval
                self._call("restore expired deliveries", unacked.restore_visible)
            if not poller.in_flight and self._can_consume():
                self._call("send BRPOP", poller.start)
        return count

    def _deliver(self, key: str, raw: bytes) -> int:
        assert self._poller is not None and self._unacked is not None and self._client
        queue = self.keys.queue_of(key)
        tag = self._by_queue.get(queue)
        if tag is None:  # cancelled while BRPOP waited: put it back where it was
            self._call("requeue", self._client.rpush, key, raw)
            return 0
        self._poller.rotate(queue)
        _, callback, no_ack = self._consumers[tag]
        delivery = self._delivery(raw, key, tag, no_ack)
        if delivery is None:
            return 0
        callback(delivery)
        return 1

    def _delivery(self, raw: bytes, key: str, consumer_tag: str, no_ack: bool) -> Delivery | None:
        unacked = self._unacked
        assert unacked is not None
        try:
            envelope = loads(raw, key)
            if not isinstance(envelope, dict):
                raise ProtocolError(f"cannot decode the message from {key}: not an object")
            body = body_of(envelope, f"a message from {key}")
        except ProtocolError as exc:
            # It is off the list already; there is no channel to reject it on.
            logger.error("dropped an undecodable message from %s: %s (%r)", key, exc, raw[:200])
            return None
        props: dict[str, Any] = envelope["properties"]
        info = props.get("delivery_info") or {}
        exchange = info.get("exchange") or ""
        routing_key = info.get("routing_key") or self.keys.queue_of(key)
        if no_ack:
            tag = unacked.next_tag()
        else:
            uuid_tag = str(props.get("delivery_tag") or uuid.uuid4())
            tag = self._call(
                "record the delivery", unacked.add, raw, uuid_tag, exchange, routing_key
            )
        properties = {k: v for k, v in props.items() if k not in INTERNAL_PROPERTIES}
        properties["content_type"] = envelope.get("content-type")
        properties["content_encoding"] = envelope.get("content-encoding")
        headers = envelope.get("headers")
        delivery_info = {
            "exchange": exchange,
            "routing_key": routing_key,
            "redelivered": bool(info.get("redelivered", False)),
            "consumer_tag": consumer_tag,
        }
        return Delivery(body, headers if headers else {}, properties, delivery_info, tag)

    def filenos(self) -> tuple[int, ...]:
        """The ``BRPOP`` socket and the signal pipe (``()`` when not connected); see the module
        docstring. A new connection has new descriptors."""
        poller, signal = self._poller, self._signal
        if poller is None or signal is None or self._broken:
            return ()
        return (poller.fileno(), signal.fileno())

    def wakeup(self) -> None:
        """Make a blocked :meth:`drain_events` return 0 now (or the next one, if none is)."""
        self._woken = True
        self._poke()

    def get(self, queue: str, no_ack: bool = False) -> Delivery | None:
        """``RPOP`` the next message of ``queue`` (step 0 first), or ``None``."""
        what = f"get from queue {queue!r}"
        client = self._usable(what)
        for key in self.keys.queue_lists(queue):
            raw: Any = self._call(what, client.rpop, key)
            if raw:
                return self._delivery(bytes(raw), key, "", no_ack)
        return None

    # -- settling --------------------------------------------------------------------------

    def ack(self, delivery_tag: int, multiple: bool = False) -> None:
        unacked = self._unacked
        if unacked is None or self._broken:
            self._usable(f"ack delivery tag {delivery_tag}")
            return
        self._call(f"ack delivery tag {delivery_tag}", unacked.ack, delivery_tag, multiple)
        self._room_made()

    def reject(self, delivery_tag: int, requeue: bool = False) -> None:
        unacked = self._unacked
        if unacked is None or self._broken:
            self._usable(f"reject delivery tag {delivery_tag}")
            return
        self._call(f"reject delivery tag {delivery_tag}", unacked.reject, delivery_tag, requeue)
        self._room_made()

    def _room_made(self) -> None:
        # The drain thread sends the next BRPOP once it sees room; tell it, unless a BRPOP is
        # out already (then it looks at the room itself when the reply comes).
        poller = self._poller
        if self._prefetch and poller is not None and not poller.in_flight:
            self._poke()


def select_readable(fds: Iterable[int], timeout: float) -> list[int]:
    return list(select.select(list(fds), (), (), timeout)[0])
