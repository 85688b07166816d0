"""The Redis broker transport (``redis://``, ``rediss://``, ``redis+socket://``), kombu's layout.

Messages, bindings and the ack bookkeeping are stored exactly as kombu's Redis transport stores
them (Celery's broker on Redis), so Celery clients and workers share queues with celeriac ones:
a queue is a list per priority step, ``LPUSH``ed and consumed with ``BRPOP``; a delivery waits
in the ``unacked`` hash until acked; named exchanges route through the
``_kombu.binding.<exchange>`` sets; fanout exchanges publish on pub/sub channels.

How consuming meets the worker's select loop: the transport holds one connection of its own
for consuming and sends its requests *without waiting*; :meth:`RedisTransport.filenos`
returns that socket and a pipe. While messages wait, a request is a Lua script that takes up
to the room under the prefetch limit and records them in ``unacked`` in the same step; once
the lists are empty it is kombu's ``BRPOP`` with a 1 s timeout (see
:mod:`celeriac.transports._redis_poll`). The socket turns readable when Redis answers (or
closes); the pipe when there is work the socket cannot show: a :meth:`wakeup`, a consumer
added, or an ack that makes room under the prefetch limit for the next request.
``drain_events(0)`` reads the answer if it is there, dispatches it, sends the next request
when the prefetch limit allows, empties the pipe, and returns. Never more than
``prefetch_count`` deliveries are unacked.

What users must know:

* **At least once, by visibility timeout.** A delivery stays in ``unacked`` until acked. A
  clean :meth:`RedisTransport.close` puts this connection's unacked deliveries back at the
  head of their queues. After a crash (SIGKILL, power loss) they come back only when some
  consumer sees them older than ``visibility_timeout`` (default 3600 s); a task running
  longer than that runs twice. The one message a waiting ``BRPOP`` hands over in the instant
  a connection dies, before it is written to ``unacked``, is lost (as with kombu); messages
  taken while the queue is busy are taken by the script and never are.
* **Passive declares** never fail: Redis cannot tell an empty queue from a missing one, so
  ``declare_queue(passive=True)`` answers the message count (0 for both).
* **Errors**: Redis unreachable or gone raises :class:`~celeriac.errors.ConnectionError` and
  every later call raises until :meth:`RedisTransport.connect` (the worker then reconnects);
  a command Redis refuses raises :class:`~celeriac.errors.ChannelError`.
* Fanout exchanges can be published to (``PUBLISH``) but not consumed from.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import redis

from celeriac._redis_params import check_params
from celeriac.errors import ChannelError, ConnectionError, TransportError
from celeriac.transports._redis_acks import Unacked
from celeriac.transports._redis_consuming import Consuming
from celeriac.transports._redis_envelope import (
    dumps,
    make_envelope,
    priority_of,
)
from celeriac.transports._redis_keys import Keys, topic_matches
from celeriac.transports._redis_options import parse_options
from celeriac.transports._redis_poll import Poller, Signal, connection_factory
from celeriac.transports._redis_queues import QueueOps
from celeriac.transports.base import WithConnection
from celeriac.urls import mask_url

__all__ = ["RedisTransport"]

logger = logging.getLogger("celeriac.transports.redis")

T = TypeVar("T")
_LOST = (redis.ConnectionError, redis.TimeoutError, OSError)


class RedisTransport(Consuming, QueueOps, WithConnection):
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
        Consuming.__init__(self)
        QueueOps.__init__(self)

    def __repr__(self) -> str:
        state = "connected" if self.connected else "not connected"
        return f"<RedisTransport {self.masked_url} {state}>"

    @property
    def visibility_timeout(self) -> float:
        """Seconds after which an unacked delivery is restored for any consumer."""
        return self.config.visibility_timeout

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
        if self._client is not None:
            self.close()  # the lost connection's deliveries go back now if Redis answers
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

    def close(self) -> None:
        """Put this connection's unacked deliveries back at the head of their queues, then
        disconnect. Never raises; what cannot be put back now comes back after the
        visibility timeout."""
        poller, unacked = self._poller, self._unacked
        try:
            taken = list(self._pending)
            self._pending.clear()
            if poller is not None and not self._broken:
                if poller.blocking and poller.client_id is not None and self._client:
                    # the BRPOP answers now: nil, or the element it had already taken
                    self._client.client_unblock(poller.client_id)
                taken += poller.finish(self.config.brpop_timeout + 1.0)
            for key, raw, recorded in taken:
                if recorded and unacked is not None:
                    unacked.track(recorded)  # restored with the others below
                elif self._client is not None:
                    self._client.rpush(key, raw)  # back where BRPOP took it from
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

    def _dispose(self) -> None:
        poller, self._poller = self._poller, None
        pool, self._pool = self._pool, None
        signal, self._signal = self._signal, None
        self._client = None
        self._unacked = None
        self._reset_consuming()
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
