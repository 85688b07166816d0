"""Redis result backend (``redis://``, ``rediss://``, ``redis+socket://``) in Celery's format."""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from celeriac import states
from celeriac.backends.base import TASK_KEY_PREFIX, KeyValueBackend, _seconds
from celeriac.compression import decompress
from celeriac.errors import ConfigurationError, TimeoutError, TransportError
from celeriac.errors import ConnectionError as BackendConnectionError
from celeriac.urls import mask_url

try:
    import redis
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ConfigurationError(
        "the redis result backend needs the redis package: pip install 'celeriac[redis]'"
    ) from exc

from celeriac._redis_params import check_params, float_or_none, redis_params
from celeriac.backends._redis_results import RESYNC, ResultConsumer, Waiter

if TYPE_CHECKING:
    from celeriac.app import Celery

__all__ = ["RedisBackend", "connection_params", "mask_url"]

logger = logging.getLogger("celeriac.backends.redis")

T = TypeVar("T")

#: Celery 5.7 marks compressed results in-band (``celery.backends.base.compress_payload``).
COMPRESSED_MAGIC = b"\x00celery-compressed\x00"

# One round trip that keeps Celery's rule "never overwrite a stored SUCCESS" atomic: read,
# decide and write (SETEX or SET, then PUBLISH of the same bytes) with nothing in between.
# Returns 1 written, 0 kept the SUCCESS, -1 when Lua cannot decode the stored value
# (compressed, another serializer), which the caller then settles with WATCH/MULTI.
_STORE_LUA = """
local current = redis.call('GET', KEYS[1])
if current then
  local ok, meta
  if ARGV[3] == 'json' then ok, meta = pcall(cjson.decode, current)
  else ok, meta = pcall(cmsgpack.unpack, current) end
  if not ok or type(meta) ~= 'table' then return -1 end
  if meta['status'] == 'SUCCESS' then return 0 end
end
local ttl = tonumber(ARGV[2])
if ttl > 0 then redis.call('SETEX', KEYS[1], ttl, ARGV[1])
else redis.call('SET', KEYS[1], ARGV[1]) end
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
"""
_LUA_CODECS = {"json": "json", "msgpack": "msgpack"}

_RETRYABLE = (redis.ConnectionError, redis.TimeoutError)


def connection_params(url: str, conf: Any) -> dict[str, Any]:
    """redis-py ``ConnectionPool`` arguments for a result backend URL, as Celery builds them.

    Settings give the defaults (timeouts, ``redis_backend_use_ssl``); the URL and then its
    query arguments win. ``rediss://`` verifies the server certificate unless
    ``ssl_cert_reqs`` says otherwise.

    Raises:
        ConfigurationError: unknown scheme, bad db, port or query value, or TLS options on a
            plain ``redis://`` URL.
    """
    defaults: dict[str, Any] = {
        "socket_timeout": float_or_none(conf.redis_socket_timeout),
        "socket_connect_timeout": float_or_none(conf.redis_socket_connect_timeout),
        "retry_on_timeout": bool(conf.redis_retry_on_timeout),
        "max_connections": conf.redis_max_connections or None,
    }
    if conf.redis_socket_keepalive:
        defaults["socket_keepalive"] = True
    if conf.redis_backend_health_check_interval:
        defaults["health_check_interval"] = conf.redis_backend_health_check_interval
    return redis_params(url, "result backend", defaults, conf.redis_backend_use_ssl)


class RedisBackend(KeyValueBackend):
    """Results in Redis exactly as Celery's ``RedisBackend`` keeps them.

    Each result is ``SETEX celery-task-meta-<id> <result_expires> <meta>`` followed by a
    ``PUBLISH`` of the same bytes on the key's channel. ``get()`` subscribes to that channel
    through one shared subscriber connection, reads the key, then sleeps until a message
    arrives: no polling.
    """

    def __init__(self, app: Celery, url: str | None = None) -> None:
        super().__init__(app, url)
        conf = app.conf
        self.url = url or "redis://"
        self.masked_url = mask_url(self.url)
        self.connparams = connection_params(self.url, conf)
        options = conf.result_backend_transport_options or {}
        prefix = options.get("global_keyprefix")
        if prefix:
            if prefix[-1] not in ":_-.":
                prefix += "_"
            self.key_prefix = f"{prefix}{TASK_KEY_PREFIX}"
        failure_expires = conf.result_failure_expires
        self.failure_expires = (
            self.expires if failure_expires is None else _seconds(failure_expires)
        )
        self.always_retry = bool(conf.result_backend_always_retry)
        self.max_retries = float(conf.result_backend_max_retries)
        self._base_sleep_ms = int(conf.result_backend_base_sleep_between_retries_ms)
        self._max_sleep_ms = int(conf.result_backend_max_sleep_between_retries_ms)
        self._health_check_interval = float_or_none(conf.redis_backend_health_check_interval)
        self.pool = redis.ConnectionPool(**self.connparams)
        check_params(self.pool, "result backend", self.masked_url)
        self.client = redis.Redis(connection_pool=self.pool)
        codec = _LUA_CODECS.get(self.serializer)
        self._store_script = self.client.register_script(_STORE_LUA) if codec else None
        self._lua_codec = codec or ""
        self._consumer: ResultConsumer | None = None
        self._consumer_lock = threading.Lock()

    # -- encoding
    def decode(self, payload: bytes) -> Any:
        if payload[: len(COMPRESSED_MAGIC)] == COMPRESSED_MAGIC:
            content_type, _, body = payload[len(COMPRESSED_MAGIC) :].partition(b"\x00")
            payload = decompress(body, content_type.decode())
        return super().decode(payload)

    def _decode_meta(self, payload: bytes, task_id: str) -> dict[str, Any]:
        meta = self.decode(payload)
        if not isinstance(meta, dict):
            raise ConfigurationError(f"result for task {task_id} is not a meta dict: {meta!r}")
        return meta

    # -- key-value primitives
    def _get(self, key: str) -> bytes | None:
        value: Any = self._call(f"read {key}", self.client.get, key)
        return None if value is None else bytes(value)

    def _set(self, key: str, value: bytes, expires: float | None) -> None:
        self._call(f"write {key}", self._write_plain, key, value, int(expires or 0))

    def _delete(self, key: str) -> None:
        self._call(f"delete {key}", self.client.delete, key)

    # -- writing
    def _store(self, task_id: str, meta: dict[str, Any], state: str) -> None:
        expires = self.failure_expires if state == states.FAILURE else self.expires
        # Celery stores an int TTL (SETEX refuses fractions); below one second means none
        ttl = int(expires or 0)
        key = self.get_key_for_task(task_id)
        self._call(f"store the result of task {task_id}", self._write, key, self.encode(meta), ttl)

    def _write(self, key: str, value: bytes, ttl: int) -> None:
        script = self._store_script
        if script is not None:
            try:
                if script(keys=[key], args=[value, ttl, self._lua_codec]) != -1:
                    return
            except redis.ResponseError as exc:
                # scripting refused (disabled, ACL): settle this write with WATCH, and stop
                # trying Lua if that works
                self._write_watched(key, value, ttl)
                logger.warning("redis refused the store script (%s); using WATCH/MULTI", exc)
                self._store_script = None
                return
        self._write_watched(key, value, ttl)

    def _write_watched(self, key: str, value: bytes, ttl: int) -> None:
        pipe: Any
        with self.client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    current = pipe.get(key)
                    if current is not None and self._is_success(current, key):
                        return
                    pipe.multi()
                    _queue_write(pipe, key, value, ttl)
                    pipe.execute()
                    return
                except redis.WatchError:
                    continue  # changed between our read and write: decide again

    def _write_plain(self, key: str, value: bytes, ttl: int) -> None:
        with self.client.pipeline() as pipe:
            _queue_write(pipe, key, value, ttl)
            pipe.execute()

    def _is_success(self, payload: bytes, key: str) -> bool:
        try:
            return bool(self.decode(payload).get("status") == states.SUCCESS)
        except Exception:  # a corrupt old value is simply replaced, as Celery does
            logger.warning("replacing undecodable result at %s", key)
            return False

    # -- reading
    def wait_for(
        self, task_id: str, timeout: float | None = None, interval: float = 0.05
    ) -> dict[str, Any]:
        """Wait for a ready state without polling (``interval`` is ignored).

        Subscribes to the key's channel first and reads the key only once the server confirmed
        the subscription, so a result stored at any moment is either read or published to us.

        Raises:
            celeriac.errors.TimeoutError: not ready within ``timeout`` seconds.
            celeriac.errors.TransportError: Redis is unreachable (after the retries allowed).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        consumer = self._results()
        with self._watching(consumer, self.get_key_for_task(task_id)) as waiter:
            while consumer.wait_live(waiter, deadline):
                meta = self.get_task_meta(task_id)
                if meta["status"] in states.READY_STATES:
                    return meta
                while True:
                    item = consumer.next_item(waiter, deadline)
                    if item is None or item is RESYNC:
                        break
                    meta = self._decode_meta(item, task_id)
                    if meta["status"] in states.READY_STATES:
                        return meta
                if item is None:
                    break
        # one last read: covers timeout=0 and a subscription not confirmed in time
        meta = self.get_task_meta(task_id)
        if meta["status"] in states.READY_STATES:
            return meta
        raise TimeoutError(f"timed out after {timeout}s waiting for task {task_id}")

    @contextmanager
    def _watching(self, consumer: ResultConsumer, key: str) -> Iterator[Waiter]:
        waiter = self._call(f"subscribe to {key}", consumer.watch, key)
        try:
            yield waiter
        finally:
            consumer.unwatch(waiter)

    def _results(self) -> ResultConsumer:
        consumer = self._consumer
        if consumer is not None and consumer.pid != os.getpid():
            # forked (prefork pool): the subscriber socket and lock belong to the parent
            self._consumer, self._consumer_lock = None, threading.Lock()
        with self._consumer_lock:
            if self._consumer is None:
                self._consumer = ResultConsumer(
                    self.pool,
                    f"redis result backend {self.masked_url}",
                    reconnect_budget=self.max_retries if self.always_retry else 0,
                    backoff=self._backoff,
                    ping_every=self._health_check_interval,
                )
            return self._consumer

    # -- errors and retries
    def _call(self, operation: str, func: Callable[..., T], *args: Any) -> T:
        """Run one Redis operation; retry connection errors if ``result_backend_always_retry``."""
        retries = 0
        while True:
            try:
                return func(*args)
            except redis.AuthenticationError as exc:
                raise BackendConnectionError(
                    f"cannot {operation}: redis result backend {self.masked_url} "
                    f"refused the credentials: {exc}"
                ) from exc
            except (*_RETRYABLE, BackendConnectionError) as exc:
                if self.always_retry and retries < self.max_retries:
                    retries += 1
                    delay = self._backoff(retries)
                    logger.warning(
                        "cannot %s on %s (%s); retry %d in %.3fs",
                        operation,
                        self.masked_url,
                        exc,
                        retries,
                        delay,
                    )
                    time.sleep(delay)
                    continue
                if isinstance(exc, BackendConnectionError):
                    raise
                tried = f" (after {retries} retries)" if retries else ""
                raise BackendConnectionError(
                    f"cannot {operation}: redis result backend {self.masked_url} "
                    f"is unreachable{tried}: {exc}"
                ) from exc
            except redis.RedisError as exc:
                raise TransportError(
                    f"cannot {operation} on redis result backend {self.masked_url}: {exc}"
                ) from exc

    def _backoff(self, retries: int) -> float:
        # Celery's full-jitter exponential backoff (get_exponential_backoff_interval)
        ceiling = min(self._max_sleep_ms, self._base_sleep_ms * 2**retries)
        return random.randint(0, max(0, ceiling)) / 1000

    def close(self) -> None:
        """Stop the subscriber thread and close every pooled connection."""
        with self._consumer_lock:
            consumer, self._consumer = self._consumer, None
        if consumer is not None:
            consumer.close()
        self.pool.disconnect()

    def __repr__(self) -> str:
        return f"<RedisBackend {self.masked_url}>"


def _queue_write(pipe: Any, key: str, value: bytes, ttl: int) -> None:
    if ttl > 0:
        # spelled out: redis-py 6+ marks setex() deprecated, and Celery's wire form is SETEX
        pipe.execute_command("SETEX", key, ttl, value)
    else:
        pipe.set(key, value)
    pipe.publish(key, value)
