"""``librabbitmq://``: the rabbitmq-c based ``librabbitmq`` module, for users who have it.

Needs ``pip install celeriac[librabbitmq]`` (the ``librabbitmq-fork`` build). The module has no
heartbeats and cannot be interrupted, so the worker's drain runs in short slices; celeriac's
own ``amqp://`` transport is the one to use otherwise.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

from celeriac.errors import ChannelError, ConfigurationError, ConnectionError
from celeriac.transports.base import Delivery, DeliveryCallback, QueueInfo

__all__ = ["LibRabbitMQTransport"]

# how long one blocking receive may hold the connection lock (publish and wakeup wait for it)
_SLICE = 0.05
# deliveries one drain_events(0) takes at most; what is left makes the wakeup pipe readable
_BATCH = 1000
_PROPERTY_NAMES = (
    "content_type",
    "content_encoding",
    "correlation_id",
    "reply_to",
    "priority",
    "delivery_mode",
    "expiration",
    "message_id",
    "timestamp",
    "type",
    "user_id",
    "app_id",
)


def _module() -> Any:
    try:
        import librabbitmq
    except ImportError as exc:
        raise ConfigurationError(
            "the librabbitmq:// transport needs the librabbitmq module: "
            "pip install celeriac[librabbitmq]"
        ) from exc
    return librabbitmq


class LibRabbitMQTransport:
    """One librabbitmq connection with one channel, behind the Transport protocol."""

    def __init__(self, url: str = "librabbitmq://", **options: Any) -> None:
        from celeriac.transports._amqp_url import parse_url

        self.url = url
        _, sep, rest = url.partition("://")
        address, _ = parse_url(f"amqp{sep}{rest}" if sep else "amqp://")
        self._address = address
        self._heartbeat = 0  # librabbitmq cannot send heartbeats from another thread
        self._lock = threading.RLock()
        self._conn: Any = None
        self._channel: Any = None
        self._woken = threading.Event()
        self._consumers: dict[str, DeliveryCallback] = {}
        self._dispatched = 0
        self._wake_r = self._wake_w = -1

    @property
    def connected(self) -> bool:
        return self._conn is not None and bool(getattr(self._conn, "connected", False))

    def connect(self) -> None:
        if self.connected:
            return
        lib = _module()
        a = self._address
        try:
            self._conn = lib.Connection(
                host=f"{a.host}:{a.port}",
                userid=a.userid,
                password=a.password,
                virtual_host=a.vhost,
                heartbeat=self._heartbeat,
            )
            self._channel = self._conn.channel()
        except Exception as exc:
            self._conn = None
            raise ConnectionError(f"cannot connect to {a.host}:{a.port}: {exc}") from exc
        if self._wake_r < 0:
            self._wake_r, self._wake_w = os.pipe()
            os.set_blocking(self._wake_r, False)
            os.set_blocking(self._wake_w, False)

    def close(self) -> None:
        with self._lock:
            conn, self._conn, self._channel = self._conn, None, None
            self._consumers.clear()
            pipe, self._wake_r, self._wake_w = (self._wake_r, self._wake_w), -1, -1
        for fd in pipe:
            if fd >= 0:
                os.close(fd)
        if conn is not None:
            with contextlib.suppress(Exception):  # closing a dead connection is fine
                conn.close()

    def _ch(self) -> Any:
        if self._channel is None:
            raise ConnectionError(f"{self.url}: not connected")
        return self._channel

    def _rpc(self, operation: str, fun: Any, *args: Any) -> Any:
        """:meth:`_call` for a synchronous method, which may read deliveries on the way.

        rabbitmq-c keeps those frames in its own buffer, where the socket does not show them:
        make the wakeup pipe readable so that the consumer loop drains them.
        """
        try:
            return self._call(operation, fun, *args)
        finally:
            self._notify()

    def _call(self, operation: str, fun: Any, *args: Any, **kwargs: Any) -> Any:
        lib = _module()
        with self._lock:
            try:
                return fun(*args, **kwargs)
            except TimeoutError:
                raise  # an idle receive, not a broken connection (TimeoutError is an OSError)
            except lib.ChannelError as exc:
                self.close()
                raise ChannelError(f"{operation}: {exc}") from exc
            except (lib.ConnectionError, OSError) as exc:
                self.close()
                raise ConnectionError(f"{operation}: {exc}") from exc

    def declare_exchange(
        self,
        name: str,
        type: str = "direct",
        durable: bool = True,
        auto_delete: bool = False,
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        self._rpc(
            "exchange.declare",
            self._ch().exchange_declare,
            name,
            type,
            False,
            durable,
            auto_delete,
            dict(arguments or {}),
        )

    def declare_queue(
        self,
        name: str,
        durable: bool = True,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: Mapping[str, Any] | None = None,
        passive: bool = False,
    ) -> QueueInfo:
        ok = self._rpc(
            "queue.declare",
            self._ch().queue_declare,
            name,
            passive,
            durable,
            exclusive,
            auto_delete,
            dict(arguments or {}),
        )
        return QueueInfo(ok[0], ok[1], ok[2])

    def bind_queue(
        self,
        queue: str,
        exchange: str,
        routing_key: str,
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        self._rpc(
            "queue.bind", self._ch().queue_bind, queue, exchange, routing_key, dict(arguments or {})
        )

    def purge_queue(self, name: str) -> int:
        return int(self._rpc("queue.purge", self._ch().queue_purge, name) or 0)

    def delete_queue(self, name: str, if_unused: bool = False, if_empty: bool = False) -> int:
        return int(
            self._rpc("queue.delete", self._ch().queue_delete, name, if_unused, if_empty) or 0
        )

    def delete_exchange(self, name: str) -> None:
        self._rpc("exchange.delete", self._ch().exchange_delete, name)

    def publish(
        self,
        body: bytes,
        exchange: str,
        routing_key: str,
        headers: Mapping[str, Any] | None = None,
        properties: Mapping[str, Any] | None = None,
        mandatory: bool = False,
    ) -> None:
        props = {k: v for k, v in (properties or {}).items() if v is not None}
        if headers:
            props["headers"] = dict(headers)
        self._call(
            "basic.publish",
            self._ch().basic_publish,
            (body, props),
            exchange,
            routing_key,
            mandatory,
        )

    def qos(self, prefetch_count: int, global_: bool = False) -> None:
        self._rpc("basic.qos", self._ch().basic_qos, 0, prefetch_count, global_)

    def consume(
        self,
        queue: str,
        callback: DeliveryCallback,
        no_ack: bool = False,
        consumer_tag: str | None = None,
    ) -> str:
        def on_message(message: Any) -> None:
            self._dispatched += 1
            callback(_delivery(message))

        tag = self._rpc(
            "basic.consume",
            self._ch().basic_consume,
            queue,
            consumer_tag,
            False,
            no_ack,
            False,
            on_message,
        )
        self._consumers[str(tag)] = callback
        return str(tag)

    def cancel(self, consumer_tag: str) -> None:
        self._consumers.pop(consumer_tag, None)
        self._rpc("basic.cancel", self._ch().basic_cancel, consumer_tag)

    def drain_events(self, timeout: float | None = None) -> int:
        """Dispatch deliveries, waiting up to ``timeout`` seconds for the first; ``0`` takes
        what is there without blocking."""
        self._drain_wakeups()
        self._dispatched = 0
        self._woken.clear()
        if timeout is not None and timeout <= 0:
            conn = self._conn_or_raise()
            for _ in range(_BATCH):
                try:
                    self._call("drain", conn.drain_events, 0)
                except TimeoutError:  # nothing more, in the socket or rabbitmq-c's buffer
                    return self._dispatched
            self._notify()
            return self._dispatched
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = _SLICE if deadline is None else min(_SLICE, deadline - time.monotonic())
            if remaining <= 0 or self._woken.is_set():
                return self._dispatched
            try:
                self._call("drain", self._conn_or_raise().drain_events, remaining)
            except TimeoutError:  # librabbitmq's way of saying "nothing arrived"
                continue
            return self._dispatched

    def _conn_or_raise(self) -> Any:
        if self._conn is None:
            raise ConnectionError(f"{self.url}: not connected")
        return self._conn

    def filenos(self) -> tuple[int, ...]:
        """The connection's socket and the wakeup pipe (``()`` when not connected).

        Readable whenever ``drain_events(0)`` has work: bytes from the broker, frames a
        synchronous method left in rabbitmq-c's buffer, or :meth:`wakeup`.
        """
        conn = self._conn
        if conn is None or self._wake_r < 0:
            return ()
        return (int(conn.fileno()), self._wake_r)

    def wakeup(self) -> None:
        self._woken.set()
        self._notify()

    def _notify(self) -> None:
        # BlockingIOError: the pipe is full, readable anyway; OSError: closed meanwhile
        with contextlib.suppress(OSError):
            if self._wake_w >= 0:
                os.write(self._wake_w, b"\0")

    def _drain_wakeups(self) -> None:
        with contextlib.suppress(OSError):
            while self._wake_r >= 0 and os.read(self._wake_r, 4096):
                pass

    def ack(self, delivery_tag: int, multiple: bool = False) -> None:
        self._call("basic.ack", self._ch().basic_ack, delivery_tag, multiple)

    def reject(self, delivery_tag: int, requeue: bool = False) -> None:
        self._call("basic.reject", self._ch().basic_reject, delivery_tag, requeue)

    def get(self, queue: str, no_ack: bool = False) -> Delivery | None:
        message = self._rpc("basic.get", self._ch().basic_get, queue, no_ack)
        return None if message is None else _delivery(message)


def _delivery(message: Any) -> Delivery:
    props = message.properties
    info = message.delivery_info
    return Delivery(
        message.body if isinstance(message.body, bytes) else bytes(message.body),
        props.get("headers"),
        {name: props[name] for name in _PROPERTY_NAMES if name in props},
        {
            "exchange": info.get("exchange"),
            "routing_key": info.get("routing_key"),
            "redelivered": bool(info.get("redelivered", False)),
            "consumer_tag": info.get("consumer_tag"),
        },
        int(info["delivery_tag"]),
    )
