"""``rpc://``: results travel back as messages to the client's own reply queue (Celery's RPC)."""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from celeriac import states
from celeriac.backends.base import Backend
from celeriac.errors import ChordError, TimeoutError

if TYPE_CHECKING:
    from celeriac.app import Celery
    from celeriac.transports.base import Delivery, Transport

__all__ = ["RPCBackend"]

logger = logging.getLogger("celeriac.backends.rpc")


class RPCBackend(Backend):
    """The worker publishes every state change to the task's ``reply_to`` queue with the task's
    ``correlation_id``; the client consumes its queue (named after ``app.oid``) and keeps the
    latest state per task. Like Celery's, it cannot do chords and keeps nothing for readers
    other than the client that sent the task.
    """

    def __init__(self, app: Celery, url: str | None = None) -> None:
        super().__init__(app, url)
        self.delivery_mode = 2 if self.persistent else 1
        self._lock = threading.RLock()
        self._transport: Transport | None = None
        self._results: dict[str, dict[str, Any]] = {}

    # -- worker side
    def store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: str | None = None,
        request: Any = None,
        children: list[Any] | None = None,
    ) -> dict[str, Any]:
        meta = self.meta_for(task_id, state, result, traceback, request, children)
        reply_to = getattr(request, "reply_to", None)
        if not reply_to:
            return meta  # nobody to tell: Celery sends nothing either
        correlation_id = getattr(request, "correlation_id", None) or task_id
        self.app.producer_transport().publish(
            self.encode(meta),
            "",
            reply_to,
            None,
            {
                "content_type": self.content_type,
                "content_encoding": self.content_encoding,
                "correlation_id": correlation_id,
                "delivery_mode": self.delivery_mode,
            },
        )
        return meta

    def _store(self, task_id: str, meta: dict[str, Any], state: str) -> None:
        raise AssertionError("store_result publishes directly")  # pragma: no cover

    # -- client side
    @property
    def queue(self) -> str:
        return self.app.oid

    def _results_transport(self) -> Transport:
        transport = self._transport
        if transport is not None and transport.connected:
            return transport
        transport = self.app.connection(heartbeat=0)  # a client connection, as Celery's
        transport.connect()
        arguments: dict[str, Any] = {}
        if self.expires:
            arguments["x-expires"] = int(self.expires * 1000)
        # durable as Celery 5.7 declares it (RabbitMQ 4.3 refuses transient shared queues)
        transport.declare_queue(
            self.queue, durable=True, auto_delete=True, arguments=arguments or None
        )
        transport.consume(self.queue, self._on_reply, no_ack=True)
        self._transport = transport
        return transport

    def on_task_call(self, task_id: str) -> None:
        with self._lock:
            self._results_transport()

    def _on_reply(self, delivery: Delivery) -> None:
        try:
            meta = self.decode(delivery.body)
        except Exception as exc:  # a foreign or corrupt reply must not break the reader
            logger.warning("discarding undecodable result message: %s", exc)
            return
        if not isinstance(meta, dict):
            return
        task_id = delivery.properties.get("correlation_id") or meta.get("task_id")
        if task_id:
            self._results[str(task_id)] = meta

    def _drain(self, timeout: float) -> None:
        self._results_transport().drain_events(timeout)

    def get_task_meta(self, task_id: str) -> dict[str, Any]:
        with self._lock:
            self._drain(0)
            meta = self._results.get(task_id)
        if meta is None:
            return {
                "status": states.PENDING,
                "result": None,
                "traceback": None,
                "children": [],
                "date_done": None,
                "task_id": task_id,
            }
        return meta

    def wait_for(
        self, task_id: str, timeout: float | None = None, interval: float = 0.05
    ) -> dict[str, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                meta = self._results.get(task_id)
                if meta is not None and meta["status"] in states.READY_STATES:
                    return meta
                remaining = 1.0 if deadline is None else deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"timed out after {timeout}s waiting for task {task_id}")
                self._drain(min(remaining, 1.0))

    def forget(self, task_id: str) -> None:
        with self._lock:
            self._results.pop(task_id, None)

    def ensure_chords_allowed(self) -> None:
        raise ChordError("the rpc:// result backend does not support chords; use Redis")

    def close(self) -> None:
        with self._lock:
            transport, self._transport = self._transport, None
        if transport is not None:
            try:
                transport.close()
            except Exception as exc:  # closing is best effort
                logger.debug("closing the result connection failed: %r", exc)
