"""Run one task: request context, hooks, signals, result storage, callbacks, chain, errbacks."""

from __future__ import annotations

import inspect
import logging
import os
import traceback as tb_module
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from celeriac import signals, states
from celeriac.canvas import signature
from celeriac.context import Context, pop_task, push_task
from celeriac.errors import Ignore, Reject, Retry
from celeriac.protocol import saferepr

if TYPE_CHECKING:
    from celeriac.result import EagerResult
    from celeriac.task import Task

__all__ = ["ExceptionInfo", "TraceResult", "eager_trace", "trace_task"]

logger = logging.getLogger("celeriac.worker.trace")


class ExceptionInfo:
    """What ``on_failure``/``on_retry`` get as ``einfo``: the exception and its traceback."""

    __slots__ = ("exception", "traceback", "type")

    def __init__(self, exc: BaseException) -> None:
        self.exception = exc
        self.type = type(exc)
        self.traceback = "".join(tb_module.format_exception(type(exc), exc, exc.__traceback__))

    def __str__(self) -> str:
        return self.traceback


class TraceResult(NamedTuple):
    state: str
    retval: Any
    einfo: ExceptionInfo | None
    requeue: bool


def trace_task(
    task: Task,
    ctx: Context,
    args: list[Any],
    kwargs: dict[str, Any],
    store_results: bool = True,
) -> TraceResult:
    """Execute ``task`` with ``ctx`` as its request and record the outcome.

    Never raises for a task's own exception: that is the FAILURE outcome. Only
    ``BaseException`` that is not an ``Exception`` (``SystemExit``, ``KeyboardInterrupt``)
    goes through.
    """
    task_id = str(ctx.id)
    backend = task.app.backend
    ignore_result = bool(task.ignore_result or ctx.ignore_result)
    store_errors = store_results and (not ignore_result or bool(task.store_errors_even_if_ignored))
    task.push_context(ctx)
    push_task(task)
    einfo: ExceptionInfo | None = None
    requeue = False
    retval: Any = None
    try:
        if signals.task_prerun.receivers:
            signals.task_prerun.send(
                sender=task, task_id=task_id, task=task, args=args, kwargs=kwargs
            )
        if store_results and task.track_started and not ignore_result:
            backend.mark_as_started(task_id, request=ctx, pid=os.getpid(), hostname=ctx.hostname)
        try:
            task.before_start(task_id, args, kwargs)
            custom = _custom_call.get(type(task))
            if custom is None:
                custom = _has_custom_call(task)
            fun = task if custom else task.run
            retval = fun(*args, **kwargs)
        except Reject as exc:
            state, requeue, retval = states.REJECTED, exc.requeue, exc
            einfo = ExceptionInfo(exc)
            if not exc.requeue and store_errors:
                backend.mark_as_failure(task_id, exc, einfo.traceback, request=ctx)
            if signals.task_rejected.receivers:
                signals.task_rejected.send(sender=task, request=ctx, requeue=exc.requeue)
        except Ignore as exc:
            state, retval = states.IGNORED, exc
        except Retry as exc:
            state, retval = states.RETRY, exc
            einfo = ExceptionInfo(exc)
            reason = exc.exc if isinstance(exc.exc, BaseException) else exc
            if store_errors:
                children = [((task_id, None), None)] if exc.sig is not None else None
                backend.mark_as_retry(
                    task_id, reason, einfo.traceback, request=ctx, children=children
                )
            task.on_retry(reason, task_id, args, kwargs, einfo)
            if signals.task_retry.receivers:
                signals.task_retry.send(sender=task, request=ctx, reason=reason, einfo=einfo)
        except Exception as exc:
            state, retval = states.FAILURE, exc
            einfo = ExceptionInfo(exc)
            _on_failure(task, ctx, exc, einfo, args, kwargs, store_errors)
        else:
            state = states.SUCCESS
            children = _dispatch_callbacks(task, ctx, retval) if ctx.callbacks or ctx.chain else []
            if store_results and not ignore_result:
                backend.mark_as_done(task_id, retval, request=ctx, children=children)
            task.on_success(retval, task_id, args, kwargs)
            if signals.task_success.receivers:
                signals.task_success.send(sender=task, result=retval)
        try:
            task.after_return(state, retval, task_id, args, kwargs, einfo)
        except Exception as exc:  # a broken hook must not change the outcome
            logger.exception("after_return of task %s[%s] raised: %r", task.name, task_id, exc)
        if signals.task_postrun.receivers:
            signals.task_postrun.send(
                sender=task,
                task_id=task_id,
                task=task,
                args=args,
                kwargs=kwargs,
                retval=retval,
                state=state,
            )
        return TraceResult(state, retval, einfo, requeue)
    finally:
        pop_task()
        task.pop_request()


_custom_call: dict[type, bool] = {}


def _has_custom_call(task: Task) -> bool:
    """Whether the task class overrides ``__call__`` (then the worker calls the task itself,
    so the override runs, as in Celery); remembered per class."""
    from celeriac.task import Task as BaseTask

    cls = type(task)
    custom = _custom_call[cls] = cls.__call__ is not BaseTask.__call__
    return custom


def _on_failure(
    task: Task,
    ctx: Context,
    exc: Exception,
    einfo: ExceptionInfo,
    args: list[Any],
    kwargs: dict[str, Any],
    store_errors: bool,
) -> None:
    task_id = str(ctx.id)
    backend = task.app.backend
    if store_errors:
        backend.mark_as_failure(task_id, exc, einfo.traceback, request=ctx)
        # so that waiting on a chain's last result does not hang forever
        for step in ctx.chain or ():
            step_id = (step.get("options") or {}).get("task_id")
            if step_id:
                step_request = Context(reply_to=ctx.reply_to, correlation_id=step_id)
                backend.mark_as_failure(step_id, exc, einfo.traceback, request=step_request)
    try:
        task.on_failure(exc, task_id, args, kwargs, einfo)
    except Exception as hook_exc:
        logger.exception("on_failure of task %s[%s] raised: %r", task.name, task_id, hook_exc)
    _call_errbacks(task, ctx, exc, einfo)
    if signals.task_failure.receivers:
        signals.task_failure.send(
            sender=task,
            task_id=task_id,
            exception=exc,
            args=args,
            kwargs=kwargs,
            traceback=exc.__traceback__,
            einfo=einfo,
        )


def _call_errbacks(task: Task, ctx: Context, exc: Exception, einfo: ExceptionInfo) -> None:
    for errback in ctx.errbacks or ():
        sig = signature(errback, app=task.app)
        local = task.app.tasks.get(sig.name)
        try:
            if local is not None and _takes_request(local):
                # Celery calls (request, exc, traceback) errbacks in the worker itself
                local(*([*sig.args, ctx, exc, einfo.traceback]), **sig.kwargs)
            elif ctx.is_eager:
                sig.apply((ctx.id,), parent_id=ctx.id, root_id=ctx.root_id or ctx.id)
            else:
                sig.apply_async((ctx.id,), parent_id=ctx.id, root_id=ctx.root_id or ctx.id)
        except Exception as eb_exc:
            logger.exception(
                "errback %r of task %s[%s] failed: %r", sig.name, task.name, ctx.id, eb_exc
            )


def _takes_request(task: Task) -> bool:
    fun = getattr(type(task), "__wrapped__", None) or task.run
    try:
        params = [
            p
            for p in inspect.signature(fun).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        return False
    if task.bind:
        params = params[1:]
    return len(params) >= 3


def _dispatch_callbacks(task: Task, ctx: Context, retval: Any) -> list[Any]:
    """Send ``link`` callbacks and the next chain step; return the ``children`` tuples."""
    children: list[Any] = []
    root_id = ctx.root_id or ctx.id
    for callback in ctx.callbacks or ():
        sig = signature(callback, app=task.app)
        result = (
            sig.apply((retval,), parent_id=ctx.id, root_id=root_id)
            if ctx.is_eager
            else sig.apply_async((retval,), parent_id=ctx.id, root_id=root_id)
        )
        children.append(result.as_tuple())
    chain = ctx.chain
    if chain:
        next_step = signature(chain[-1], app=task.app)
        rest = chain[:-1]
        if ctx.is_eager:
            result = next_step.apply((retval,), chain=rest, parent_id=ctx.id, root_id=root_id)
        else:
            result = next_step.apply_async((retval,), chain=rest, parent_id=ctx.id, root_id=root_id)
        children.append(result.as_tuple())
    return children


def eager_trace(
    task: Task,
    args: list[Any],
    kwargs: dict[str, Any],
    task_id: str | None = None,
    link: Any = None,
    link_error: Any = None,
    throw: bool = False,
    retries: int = 0,
    options: Mapping[str, Any] | None = None,
) -> EagerResult:
    """``Task.apply``: run now in this thread and wrap the outcome in an EagerResult."""
    from celeriac.result import EagerResult

    options = options or {}
    task_id = task_id or str(uuid.uuid4())
    ctx = Context(
        id=task_id,
        task=task.name,
        args=args,
        kwargs=kwargs,
        retries=retries,
        is_eager=True,
        called_directly=False,
        hostname=_hostname(),
        root_id=options.get("root_id") or task_id,
        parent_id=options.get("parent_id"),
        group=options.get("group_id"),
        group_index=options.get("group_index"),
        callbacks=_as_list(link) or _as_list(options.get("link")),
        errbacks=_as_list(link_error) or _as_list(options.get("link_error")),
        chain=options.get("chain"),
        chord=options.get("chord"),
        delivery_info={"is_eager": True},
        headers=options.get("headers"),
        ignore_result=bool(options.get("ignore_result", False)),
        argsrepr=saferepr(args),
        kwargsrepr=saferepr(kwargs),
    )
    store = bool(task.app.conf.task_store_eager_result)
    result = trace_task(task, ctx, args, kwargs, store_results=store)
    retval = result.retval
    if result.state == states.RETRY and isinstance(retval, Retry):
        nested = getattr(retval, "eager_result", None)
        if nested is not None:
            return nested  # type: ignore[no-any-return]
    if result.state == states.FAILURE and throw:
        raise retval
    tb = result.einfo.traceback if result.einfo else None
    return EagerResult(task_id, retval, result.state, tb, name=task.name)


def _as_list(value: Any) -> list[Any] | None:
    if value is None:
        return None
    if isinstance(value, Mapping):
        return [value]
    return list(value)


def _hostname() -> str:
    import socket

    return f"celeriac@{socket.gethostname()}"
