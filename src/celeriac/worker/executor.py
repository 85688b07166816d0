"""Run a reserved request: decode its body, apply the ack policy around the trace."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from celeriac import states
from celeriac.errors import (
    ContentDisallowed,
    DecodeError,
    InvalidTaskError,
    TaskRevokedError,
)
from celeriac.worker.trace import trace_task

if TYPE_CHECKING:
    from celeriac.worker.request import Request
    from celeriac.worker.state import WorkerState

__all__ = ["discard_if_revoked", "execute_request", "revoke_request"]

logger = logging.getLogger("celeriac.worker")


def execute_request(request: Request, state: WorkerState) -> str | None:
    """Execute ``request`` in this thread; return the final state (``None`` if it never ran).

    Ack rules follow Celery: early ack just before the task runs; with ``acks_late`` after it,
    where a failure acks only when ``acks_on_failure_or_timeout`` and ``Reject`` rejects.
    """
    message = request.message
    task = request.task
    try:
        args, kwargs, embed = message.decode_body()
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
    if discard_if_revoked(request, state):
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


def discard_if_revoked(request: Request, state: WorkerState) -> bool:
    """Skip ``request`` if it was revoked or has expired (Celery checks on arrival and again
    before running); return whether it was skipped."""
    message = request.message
    revoked = message.id in state.revoked
    expires_at = message.expires_at
    if not revoked and (expires_at is None or expires_at >= time.time()):
        return False
    revoke_request(request, state, expired=not revoked)
    return True


def revoke_request(request: Request, state: WorkerState, expired: bool) -> None:
    """Skip a revoked or expired task: store REVOKED and ack, as Celery does."""
    message = request.message
    reason = "expired" if expired else "revoked"
    state.revoked.add(message.id)
    logger.info("discarding %s task %s[%s]", reason, message.name, message.id)
    try:
        args, kwargs, embed = message.decode_body()
    except Exception:
        args, kwargs, embed = [], {}, {}
    ctx = request.context(args, kwargs, embed)
    # Celery stores REVOKED even for ignore_result tasks, so waiters do not hang
    request.task.app.backend.store_result(
        message.id, TaskRevokedError(reason), states.REVOKED, None, ctx, children=None
    )
    request.acknowledge()
