"""Outcomes only the prefork parent can record: hard time limits and lost children."""

from __future__ import annotations

import logging
import signal
from typing import TYPE_CHECKING, Any

from celeriac.errors import TimeLimitExceeded, WorkerLostError
from celeriac.worker.trace import ExceptionInfo, _on_failure

if TYPE_CHECKING:
    from celeriac.worker.request import Request

__all__ = ["LOST_HEADER", "describe_exit", "fail_request", "time_limit_exceeded", "worker_lost"]

logger = logging.getLogger("celeriac.pool.prefork")

LOST_HEADER = "x-celeriac-lost"
"""How many times a message was republished because the child running it died."""

_PROPERTIES = ("content_type", "content_encoding", "correlation_id", "reply_to", "priority")


def fail_request(request: Request, exc: Exception) -> None:
    """Store FAILURE ``exc`` for ``request`` and run its ``on_failure`` and errbacks, as the
    tracer does when the task itself raises."""
    task = request.task
    try:
        args, kwargs, embed = request.message.decode_body()
    except Exception:
        args, kwargs, embed = [], {}, {}
    ctx = request.context(args, kwargs, embed)
    store_errors = not (task.ignore_result or ctx.ignore_result) or bool(
        task.store_errors_even_if_ignored
    )
    try:
        _on_failure(task, ctx, exc, ExceptionInfo(exc), args, kwargs, store_errors)
    except Exception as store_exc:
        logger.exception(
            "cannot record failure %r of task %s[%s]: %r", exc, request.name, request.id, store_exc
        )


def time_limit_exceeded(request: Request, limit: float) -> None:
    """The child running ``request`` was killed at its hard limit: FAILURE, then ack (or
    requeue when late acks must not ack failures, as Celery's ``acks_on_timeout``)."""
    logger.error("hard time limit (%ss) exceeded for %s[%s]", limit, request.name, request.id)
    fail_request(request, TimeLimitExceeded(limit))
    task = request.task
    if task.acks_late and not task.acks_on_failure_or_timeout:
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


def worker_lost(request: Request, exitcode: int | None, max_redeliveries: int) -> None:
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
                _republish(request, headers)
            except Exception as exc:
                logger.error("cannot republish %s[%s]: %r; requeued", request.name, request.id, exc)
                request.reject(requeue=True)
                return
            request.acknowledge()
            return
        desc = f"{desc[:-1]} (lost {count + 1} times, not redelivered again)."
    logger.error("%s[%s]: %s", request.name, request.id, desc)
    fail_request(request, WorkerLostError(desc))
    if task.acks_late and not task.acks_on_failure_or_timeout:
        request.reject(requeue=False)
    else:
        request.acknowledge()


def _republish(request: Request, headers: dict[str, Any]) -> None:
    message = request.message
    properties: dict[str, Any] = {"delivery_mode": 2}
    for name in _PROPERTIES:
        value = getattr(message, name)
        if value is not None:
            properties[name] = value
    routing_key = (message.delivery_info or {}).get("routing_key") or ""
    transport = request.task.app.producer_transport()
    transport.publish(message.body, "", routing_key, headers=headers, properties=properties)
