"""Run a reserved request: decode its body, apply the ack policy around the trace."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from celeriac import signals, states
from celeriac.context import Context
from celeriac.errors import (
    ContentDisallowed,
    DecodeError,
    InvalidTaskError,
    NotRegistered,
    SoftTimeLimitExceeded,
    TaskRevokedError,
)
from celeriac.worker.trace import ExceptionInfo, _on_failure, trace_task

if TYPE_CHECKING:
    from celeriac._speedups_py.message import TaskMessage
    from celeriac.app import Celery
    from celeriac.worker.request import Request
    from celeriac.worker.state import WorkerState

__all__ = [
    "DEFAULT_EXECUTOR",
    "Executor",
    "body_or_empty",
    "decode_request",
    "discard_if_revoked",
    "execute_request",
    "fail_request",
    "revoke_request",
    "store_unknown",
]

logger = logging.getLogger("celeriac.worker")


def execute_request(request: Request, state: WorkerState) -> str | None:
    """Execute ``request`` in this thread; return the final state (``None`` if it never ran).

    Ack rules follow Celery: early ack just before the task runs; with ``acks_late`` after it,
    where a failure acks only when ``acks_on_failure_or_timeout`` and ``Reject`` rejects.
    """
    message = request.message
    task = request.task
    body = decode_request(request)
    if body is None:
        return None
    args, kwargs, embed = body
    if discard_if_revoked(request, state, revoke_request):
        return states.REVOKED
    acks_late = bool(task.acks_late)
    if not acks_late:
        request.acknowledge()
    request.on_accepted()
    state.task_accepted(request)
    ctx = request.context(args, kwargs, embed)
    try:
        result = trace_task(task, ctx, args, kwargs)
    finally:
        state.task_ready(request)
    if acks_late:
        if result.state == states.REJECTED:
            request.reject(requeue=result.requeue)
        elif result.state == states.FAILURE and not task.acks_on_failure_or_timeout:
            request.reject(requeue=False)
        else:
            request.acknowledge()
    elif result.state == states.REJECTED:
        request.reject(requeue=result.requeue)
    if result.state == states.FAILURE and result.einfo is not None:
        logger.error(
            "task %s[%s] raised unexpected: %r\n%s",
            message.name,
            message.id,
            result.retval,
            result.einfo.traceback,
        )
    return result.state


def decode_request(request: Request) -> tuple[list[Any], dict[str, Any], dict[str, Any]] | None:
    """The body of ``request`` as ``(args, kwargs, embed)``; ``None`` when it cannot be run,
    after acking (undecodable) or rejecting (invalid) it as Celery does."""
    message = request.message
    try:
        return message.decode_body()
    except DecodeError as exc:
        # Celery acks what it cannot decode so the message does not loop forever
        logger.critical(
            "can't decode message body of task %s[%s]: %s (headers=%r, body=%r)",
            message.name,
            message.id,
            exc,
            message.headers,
            message.body[:256],
        )
        request.acknowledge()
        return None
    except (InvalidTaskError, ContentDisallowed) as exc:
        logger.error(
            "received invalid task message %s[%s]: %s; rejected", message.name, message.id, exc
        )
        request.reject(requeue=False)
        return None


def body_or_empty(request: Request) -> tuple[list[Any], dict[str, Any], dict[str, Any]]:
    """``(args, kwargs, embed)`` of ``request``, empty when the body cannot be decoded: for
    recording an outcome (revoked, lost), where the arguments are only context."""
    try:
        return request.message.decode_body()
    except Exception:
        return [], {}, {}


def discard_if_revoked(
    request: Request,
    state: WorkerState,
    revoke: Callable[[Request, WorkerState, bool], None],
) -> bool:
    """Skip ``request`` through ``revoke`` if it was revoked or has expired (Celery checks on
    arrival and again before running); return whether it was skipped."""
    message = request.message
    revoked = message.id in state.revoked
    expires_at = message.expires_at
    if not revoked and (expires_at is None or expires_at >= time.time()):
        return False
    revoke(request, state, not revoked)
    return True


def revoke_request(request: Request, state: WorkerState, expired: bool) -> None:
    """Skip a revoked or expired task: store REVOKED and ack, as Celery does."""
    message = request.message
    reason = "expired" if expired else "revoked"
    state.revoked.add(message.id)
    logger.info("discarding %s task %s[%s]", reason, message.name, message.id)
    args, kwargs, embed = body_or_empty(request)
    ctx = request.context(args, kwargs, embed)
    # Celery stores REVOKED even for ignore_result tasks, so waiters do not hang
    request.task.app.backend.store_result(
        message.id, TaskRevokedError(reason), states.REVOKED, None, ctx, children=None
    )
    request.acknowledge()


def fail_request(request: Request, exc: Exception) -> None:
    """Store FAILURE ``exc`` for ``request`` and run its ``on_failure`` and errbacks, as the
    tracer does when the task itself raises (a hard time limit, a lost child)."""
    task = request.task
    args, kwargs, embed = body_or_empty(request)
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


def store_unknown(app: Celery, message: TaskMessage) -> None:
    """Store FAILURE ``NotRegistered`` for a task this worker does not know, so that whoever
    waits for its result does not wait forever."""
    # reply_to/correlation_id let the RPC backend route the failure to the client
    request = Context(
        id=message.id,
        task=message.name,
        reply_to=message.reply_to,
        correlation_id=message.correlation_id,
    )
    app.backend.store_result(message.id, NotRegistered(message.name), states.FAILURE, None, request)


def _process_init(app: Celery, hostname: str) -> None:
    if signals.worker_process_init.receivers:
        signals.worker_process_init.send(sender=hostname)


def _process_exit(app: Celery, hostname: str, exitcode: int) -> None:
    return None


class Executor(NamedTuple):
    """How a worker runs the tasks of its app, chosen once when the worker is built.

    celeriac's own tasks use :data:`DEFAULT_EXECUTOR`; an app of another framework
    (``celeriac.compat.celery``) brings its own, and the consumer, the pools and the prefork
    children stay the same.
    """

    execute: Callable[[Request, WorkerState], str | None]
    """Run a reserved request in this thread and settle it; return the final state."""
    revoke: Callable[[Request, WorkerState, bool], None]
    """Skip a revoked (``False``) or expired (``True``) request: store REVOKED, ack."""
    fail: Callable[[Request, Exception], None]
    """Record a failure the task could not record itself (hard time limit, lost child)."""
    unknown: Callable[[Celery, TaskMessage], None]
    """Record the failure of a message naming a task the app does not have (may raise)."""
    process_init: Callable[[Celery, str], None]
    """Called with the app and node name in each prefork child before its first task."""
    process_exit: Callable[[Celery, str, int], None]
    """Called with the app, node name and exit code as a prefork child exits."""
    soft_time_limit_error: type[Exception]
    """Raised inside a task in a prefork child when its soft time limit passes."""


DEFAULT_EXECUTOR = Executor(
    execute=execute_request,
    revoke=revoke_request,
    fail=fail_request,
    unknown=store_unknown,
    process_init=_process_init,
    process_exit=_process_exit,
    soft_time_limit_error=SoftTimeLimitExceeded,
)
