"""Run Celery tasks with Celery's tracer, settled as ``celery.worker.request.Request`` does.

The tracer (``celery.app.trace.build_tracer``) runs the task with Celery's request
context, hooks, signals, result storage, callbacks and retries; this module only chooses
the ack, reject or requeue from what it returns, and records what only a worker can (a
revoked or expired task, a hard time limit, a lost child).
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from celeriac import states
from celeriac.errors import TimeLimitExceeded as CeleriacTimeLimitExceeded
from celeriac.worker.executor import (
    Executor,
    body_or_empty,
    decode_request,
    discard_if_revoked,
)

if TYPE_CHECKING:
    from celeriac._speedups_py.message import TaskMessage
    from celeriac.app import Celery
    from celeriac.compat.celery_events import WorkerEvents
    from celeriac.worker.request import Request
    from celeriac.worker.state import WorkerState

__all__ = ["CELERY_EXECUTOR", "request_dict", "use_events"]

logger = logging.getLogger("celeriac.compat")

_SUCCESS = states.SUCCESS
_events: WorkerEvents | None = None


def use_events(events: WorkerEvents | None) -> None:
    """Send Celery's task events through ``events`` (set before prefork children start, so
    they inherit it), or none."""
    global _events
    _events = events


def request_dict(
    request: Request, args: list[Any], kwargs: dict[str, Any], embed: dict[str, Any] | None
) -> dict[str, Any]:
    """The request mapping Celery's worker hands its tracer: the message headers, the
    properties that matter, the delivery info, the arguments and the embedded canvas."""
    m = request.message
    req = dict(m.headers)
    if "id" not in req:  # protocol 1: the fields came in the body
        req.update(id=m.id, task=m.name, retries=m.retries, eta=m.eta, expires=m.expires)
    req.update(
        properties={
            "correlation_id": m.correlation_id,
            "reply_to": m.reply_to,
            "priority": m.priority,
            "content_type": m.content_type,
            "content_encoding": m.content_encoding,
        },
        reply_to=m.reply_to,
        correlation_id=m.correlation_id,
        hostname=request.hostname,
        delivery_info=request.delivery_info,
        args=args,
        kwargs=kwargs,
        is_eager=False,
    )
    if embed:
        req.update(embed)
    return req


def _store_errors(task: Any, req: dict[str, Any]) -> bool:
    ignore_result = req.get("ignore_result")
    if ignore_result is None:
        ignore_result = task.ignore_result
    return not ignore_result or bool(task.store_errors_even_if_ignored)


def execute(request: Request, state: WorkerState) -> str | None:
    """Run ``request`` through its task's Celery tracer in this thread and settle it."""
    message = request.message
    task: Any = request.task
    body = decode_request(request)
    if body is None:
        return None
    args, kwargs, embed = body
    if discard_if_revoked(request, state, revoke):
        return states.REVOKED
    acks_late = task.acks_late
    if not acks_late:
        request.acknowledge()
    request.on_accepted()
    state.task_accepted(request)
    events = _events
    if events is not None:
        events.task(task, "task-started", uuid=message.id)
    req = request_dict(request, args, kwargs, embed)
    trace = task.__trace__
    if trace is None:
        trace = _build_tracer(task, request.hostname)
    traced: Any = None
    try:
        traced = trace(message.id, args, kwargs, req)
        info = traced[1]
    except Exception as exc:
        # only what Celery's tracer re-raises: Reject from on_success/after_return, and
        # errors outside the task body
        info = _outside_body(task, message.id, exc)
    finally:
        state.task_ready(request)
    if info is None:
        if acks_late:
            request.acknowledge()
        if events is not None:
            events.task(
                task, "task-succeeded", uuid=message.id, result=traced[3], runtime=traced[2]
            )
        return _SUCCESS
    if events is not None:
        _outcome_event(events, task, message.id, info, traced)
    return _settle(request, task, info, req, acks_late)


def _outcome_event(events: WorkerEvents, task: Any, task_id: str, info: Any, traced: Any) -> None:
    """``task-failed`` or ``task-retried``, with the fields Celery's worker gives them."""
    from celery.utils.saferepr import saferepr

    einfo = traced[0] if traced is not None else None
    traceback = getattr(einfo, "traceback", None)
    if info.state == states.RETRY:
        exc = getattr(info.retval, "exc", None) or info.retval
        events.task(
            task, "task-retried", uuid=task_id, exception=saferepr(exc), traceback=traceback
        )
    elif info.state == states.FAILURE or (
        info.state == states.REJECTED and not getattr(info.retval, "requeue", False)
    ):
        exc = getattr(einfo, "exception", None) or info.retval
        events.task(task, "task-failed", uuid=task_id, exception=saferepr(exc), traceback=traceback)


def _reject(request: Request, task: Any, requeue: bool) -> None:
    if request.acknowledged:
        return
    request.reject(requeue=requeue)
    events = _events
    if events is not None:
        events.task(task, "task-rejected", uuid=request.id, requeue=requeue)


def _build_tracer(task: Any, hostname: str) -> Any:
    from celery.app.trace import build_tracer

    app = task.app
    trace = task.__trace__ = build_tracer(task.name, task, app.loader, hostname, app=app)
    return trace


def _outside_body(task: Any, task_id: str, exc: Exception) -> Any:
    from celery.app.trace import TraceInfo
    from celery.exceptions import Reject

    if isinstance(exc, Reject):
        return TraceInfo(states.REJECTED, exc)
    logger.error("task %s[%s]: error outside the task body: %r", task.name, task_id, exc)
    return TraceInfo(states.FAILURE, exc)


def _settle(request: Request, task: Any, info: Any, req: dict[str, Any], acks_late: bool) -> str:
    """Celery's ``Request.on_failure``/``on_retry`` for what the tracer returned."""
    state: str = info.state
    exc = info.retval
    if state == states.REJECTED:
        if not exc.requeue:
            # the task will never run again: a terminal FAILURE, not PENDING forever
            _record_failure(task, req, exc, call_hooks=False)
        _reject(request, task, bool(exc.requeue))
    elif state in (states.IGNORED, states.RETRY):
        request.acknowledge()
    elif state == states.FAILURE and acks_late:
        from billiard.exceptions import TimeLimitExceeded

        timeout = isinstance(exc, TimeLimitExceeded)
        acks = task.acks_on_timeout if timeout else task.acks_on_failure
        if timeout and not acks:
            _reject(request, task, True)
        elif acks:
            request.acknowledge()
        else:
            _reject(request, task, False)
    return state


def _record_failure(task: Any, req: dict[str, Any], exc: BaseException, call_hooks: bool) -> None:
    """Store FAILURE ``exc``, then (``call_hooks``) ``on_failure``/``after_return``, and send
    ``task_failure``, as Celery's worker does for outcomes the tracer did not record."""
    from billiard.einfo import ExceptionInfo
    from celery import signals as celery_signals
    from celery.app.task import Context
    from celery.app.trace import task_has_custom

    task_id = req.get("id")
    ctx = Context(req)
    args, kwargs = req.get("args") or [], req.get("kwargs") or {}
    try:
        raise exc
    except BaseException:
        einfo = ExceptionInfo()
    try:
        task.backend.mark_as_failure(
            task_id, exc, request=ctx, store_result=_store_errors(task, req)
        )
        if call_hooks:
            task.on_failure(exc, task_id, args, kwargs, einfo)
            if task_has_custom(task, "after_return"):
                task.after_return(states.FAILURE, exc, task_id, args, kwargs, None)
        task.request_stack.push(ctx)
        try:
            celery_signals.task_failure.send(
                sender=task,
                task_id=task_id,
                exception=exc,
                args=args,
                kwargs=kwargs,
                traceback=einfo.traceback,
                einfo=einfo,
            )
        finally:
            task.request_stack.pop()
    except Exception:  # the backend is down: the message is still settled by the caller
        logger.exception("cannot record failure %r of task %s[%s]", exc, task.name, task_id)
    finally:
        exc.__traceback__ = None


def revoke(request: Request, state: WorkerState, expired: bool) -> None:
    """A revoked or expired task: REVOKED stored the Celery way (chords see it), then ack."""
    from celery import signals as celery_signals
    from celery.app.task import Context

    message = request.message
    task: Any = request.task
    reason = "expired" if expired else "revoked"
    state.revoked.add(message.id)
    logger.info("discarding %s task %s[%s]", reason, message.name, message.id)
    args, kwargs, embed = body_or_empty(request)
    req = request_dict(request, args, kwargs, embed)
    ctx = Context(req)
    try:
        task.backend.mark_as_revoked(
            message.id, reason, request=ctx, store_result=_store_errors(task, req)
        )
    finally:
        request.acknowledge()
    events = _events
    if events is not None:
        events.task(
            task, "task-revoked", uuid=message.id, terminated=False, signum=None, expired=expired
        )
    celery_signals.task_revoked.send(
        sender=task, request=ctx, terminated=False, signum=None, expired=expired
    )


def fail(request: Request, exc: Exception) -> None:
    """A hard time limit or a lost child, stored with Celery's (billiard's) exceptions."""
    from billiard.exceptions import TimeLimitExceeded, WorkerLostError

    timeout = isinstance(exc, CeleriacTimeLimitExceeded)
    converted: BaseException = (
        TimeLimitExceeded(*exc.args) if timeout else WorkerLostError(*exc.args)
    )
    args, kwargs, embed = body_or_empty(request)
    req = request_dict(request, args, kwargs, embed)
    _record_failure(request.task, req, converted, call_hooks=timeout)
    events = _events
    if events is not None:
        events.task(request.task, "task-failed", uuid=request.id, exception=repr(converted))


def unknown(app: Celery, message: TaskMessage) -> None:
    """A task the Celery app does not have: FAILURE with Celery's ``NotRegistered``, stored
    and signalled as Celery's consumer does."""
    from celery import signals as celery_signals
    from celery.exceptions import NotRegistered
    from celery.utils.objects import Bunch

    capp: Any = getattr(app, "celery_app", None)
    request = Bunch(
        name=message.name,
        chord=None,
        root_id=message.root_id,
        correlation_id=message.correlation_id,
        reply_to=message.reply_to,
        errbacks=None,
    )
    exc = NotRegistered(message.name)
    try:
        capp.backend.mark_as_failure(message.id, exc, request=request)
    finally:
        celery_signals.task_unknown.send(
            sender=None, message=message, exc=exc, name=message.name, id=message.id
        )


def process_init(app: Celery, hostname: str) -> None:
    """A prefork child before its first task, as Celery's ``process_initializer``."""
    from celery import _state
    from celery import signals as celery_signals
    from celery.app.trace import build_tracer

    capp: Any = getattr(app, "celery_app", None)
    if capp is None:
        return
    capp._after_fork()  # the parent's producer pool is not this process's
    _state._set_task_join_will_block(True)
    capp.loader.init_worker()
    capp.loader.init_worker_process()
    capp.set_current()
    _state.set_default_app(capp)
    capp.finalize()
    for name, task in capp.tasks.items():
        task.__trace__ = build_tracer(name, task, capp.loader, hostname, app=capp)
    celery_signals.worker_process_init.send(sender=hostname)


def process_exit(app: Celery, hostname: str, exitcode: int) -> None:
    from celery import signals as celery_signals

    events = _events
    if events is not None:
        events.stop()  # this child's own connection
    celery_signals.worker_process_shutdown.send(sender=hostname, pid=os.getpid(), exitcode=exitcode)


def _soft_time_limit_error() -> type[Exception]:
    from billiard.exceptions import SoftTimeLimitExceeded

    cls: type[Exception] = SoftTimeLimitExceeded
    return cls


CELERY_EXECUTOR = Executor(
    execute=execute,
    revoke=revoke,
    fail=fail,
    unknown=unknown,
    process_init=process_init,
    process_exit=process_exit,
    soft_time_limit_error=_soft_time_limit_error(),
)
