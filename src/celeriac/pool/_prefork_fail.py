"""Outcomes only the prefork parent can record: hard time limits and lost children."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from celeriac.errors import TimeLimitExceeded, WorkerLostError
from celeriac.worker.executor import fail_request

if TYPE_CHECKING:
    from celeriac.app import Celery
    from celeriac.worker.request import Request

__all__ = ["LOST_HEADER", "describe_exit", "time_limit_exceeded", "worker_lost"]

Fail = Callable[["Request", Exception], None]

logger = logging.getLogger("celeriac.pool.prefork")

LOST_HEADER = "x-celeriac-lost"
"""How many times a message was republished because the child running it died."""

_PROPERTIES = ("content_type", "content_encoding", "correlation_id", "reply_to", "priority")


def _acks_failure(task: Any, timeout: bool) -> bool:
    """Celery's ``acks_on_timeout``/``acks_on_failure`` where the task has them, else
    ``acks_on_failure_or_timeout``."""
    flag = getattr(task, "acks_on_timeout" if timeout else "acks_on_failure", None)
    return bool(task.acks_on_failure_or_timeout if flag is None else flag)


def time_limit_exceeded(request: Request, limit: float, fail: Fail = fail_request) -> None:
    """The child running ``request`` was killed at its hard limit: FAILURE, then ack (or
    requeue when late acks must not ack failures, as Celery's ``acks_on_timeout``)."""
    logger.error("hard time limit (%ss) exceeded for %s[%s]", limit, request.name, request.id)
    fail(request, TimeLimitExceeded(limit))
    task = request.task
    if task.acks_late and not _acks_failure(task, timeout=True):
        request.reject(requeue=True)
    else:
        request.acknowledge()


def describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "exitcode unknown"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            return f"signal {-exitcode}"
        return f"signal {-exitcode} ({name})"
    return f"exitcode {exitcode}"


def worker_lost(
    request: Request,
    exitcode: int | None,
    max_redeliveries: int,
    app: Celery,
    fail: Fail = fail_request,
) -> None:
    """The child died running ``request``.

    Default (Celery's): FAILURE ``WorkerLostError`` and ack, so a task that kills its process
    cannot loop. With ``acks_late`` and ``reject_on_worker_lost`` the message is republished
    to its queue with :data:`LOST_HEADER` counting the attempts and the original acked, until
    the count reaches ``max_redeliveries``; then it fails like the default.
    """
    task = request.task
    message = request.message
    desc = f"Worker exited prematurely: {describe_exit(exitcode)}."
    if task.acks_late and task.reject_on_worker_lost:
        headers: dict[str, Any] = dict(message.headers or {})
        try:
            count = int(headers.get(LOST_HEADER) or 0)
        except (TypeError, ValueError):
            count = 0
        if count < max_redeliveries:
            headers[LOST_HEADER] = count + 1
            logger.warning(
                "%s[%s]: %s; redelivering (%d of %d)",
                request.name,
                request.id,
                desc,
                count + 1,
                max_redeliveries,
            )
            try:
                _republish(app, request, headers)
            except Exception as exc:
                logger.error("cannot republish %s[%s]: %r; requeued", request.name, request.id, exc)
                request.reject(requeue=True)
                return
            request.acknowledge()
            return
        desc = f"{desc[:-1]} (lost {count + 1} times, not redelivered again)."
    logger.error("%s[%s]: %s", request.name, request.id, desc)
    fail(request, WorkerLostError(desc))
    if task.acks_late and not _acks_failure(task, timeout=False):
        request.reject(requeue=False)
    else:
        request.acknowledge()


def _republish(app: Celery, request: Request, headers: dict[str, Any]) -> None:
    message = request.message
    properties: dict[str, Any] = {"delivery_mode": 2}
    for name in _PROPERTIES:
        value = getattr(message, name)
        if value is not None:
            properties[name] = value
    routing_key = (message.delivery_info or {}).get("routing_key") or ""
    transport = app.producer_transport()
    transport.publish(message.body, "", routing_key, headers=headers, properties=properties)
