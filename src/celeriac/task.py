"""The ``Task`` class: what ``@app.task`` makes, with Celery's options and methods."""

from __future__ import annotations

import inspect
import random
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, ClassVar

from celeriac import states
from celeriac.context import Context, current_task
from celeriac.errors import MaxRetriesExceededError, Reject, Retry
from celeriac.protocol import PROTOCOL_HEADERS

if TYPE_CHECKING:
    from celeriac.app import Celery
    from celeriac.canvas import Signature
    from celeriac.result import AsyncResult, EagerResult

__all__ = ["Task", "exponential_backoff"]


class _RequestStack(threading.local):
    def __init__(self) -> None:
        self.stack: list[Context] = []


class Task:
    """A task type. Subclass it (``base=``) to share hooks and options between tasks.

    Class attributes are Celery's task options; ``None`` means "use the app's setting".
    """

    name: str = ""
    app: Celery
    typing: bool = True
    max_retries: int | None = 3
    default_retry_delay: float = 180
    rate_limit: str | float | None = None
    ignore_result: bool | None = None
    store_errors_even_if_ignored: bool | None = None
    acks_late: bool | None = None
    acks_on_failure_or_timeout: bool | None = None
    reject_on_worker_lost: bool | None = None
    track_started: bool | None = None
    time_limit: float | None = None
    soft_time_limit: float | None = None
    serializer: str | None = None
    compression: str | None = None
    queue: str | None = None
    priority: int | None = None
    expires: float | datetime | None = None
    autoretry_for: tuple[type[BaseException], ...] = ()
    dont_autoretry_for: tuple[type[BaseException], ...] = ()
    retry_kwargs: ClassVar[dict[str, Any]] = {}
    retry_backoff: bool | float = False
    retry_backoff_max: float = 600
    retry_jitter: bool = True
    throws: tuple[type[BaseException], ...] = ()
    bind: bool = False

    _request_stack: _RequestStack
    _default_request = Context()

    def __init__(self) -> None:
        self._request_stack = _RequestStack()

    # -- settings resolved against the app
    def bind_app(self, app: Celery) -> None:
        """Attach to ``app`` and resolve ``None`` options from its configuration."""
        self.app = app
        conf = app.conf
        for attr, setting in (
            ("ignore_result", "task_ignore_result"),
            ("store_errors_even_if_ignored", "task_store_errors_even_if_ignored"),
            ("acks_late", "task_acks_late"),
            ("acks_on_failure_or_timeout", "task_acks_on_failure_or_timeout"),
            ("reject_on_worker_lost", "task_reject_on_worker_lost"),
            ("track_started", "task_track_started"),
            ("serializer", "task_serializer"),
            ("rate_limit", "task_default_rate_limit"),
            ("time_limit", "task_time_limit"),
            ("soft_time_limit", "task_soft_time_limit"),
        ):
            if getattr(self, attr) is None:
                setattr(self, attr, conf[setting])

    # -- calling
    def run(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("tasks must define the run method")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the task in this process, as a plain function (with ``request`` set)."""
        self.push_request(args=args, kwargs=kwargs)
        try:
            return self.run(*args, **kwargs)
        finally:
            self.pop_request()

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult | EagerResult:
        """Shortcut for ``apply_async(args, kwargs)``."""
        return self.apply_async(args, kwargs)

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        task_id: str | None = None,
        link: Any = None,
        link_error: Any = None,
        shadow: str | None = None,
        **options: Any,
    ) -> AsyncResult | EagerResult:
        """Send the task to a worker (or run it here when ``task_always_eager``)."""
        if self.typing:
            self._check_arguments(args or (), kwargs or {})
        app = self.app
        if app.conf.task_always_eager:
            return self.apply(
                args, kwargs, task_id=task_id, link=link, link_error=link_error, **options
            )
        for option in (
            "queue",
            "priority",
            "serializer",
            "compression",
            "time_limit",
            "soft_time_limit",
            "expires",
        ):
            value = getattr(self, option, None)
            if value is not None:
                options.setdefault(option, value)
        if self.ignore_result:
            options.setdefault("ignore_result", True)
        return app.send_task(
            self.name,
            args,
            kwargs,
            task_id=task_id,
            link=link,
            link_error=link_error,
            shadow=shadow or self.shadow_name(args, kwargs, options),
            **options,
        )

    def shadow_name(self, args: Any, kwargs: Any, options: Mapping[str, Any]) -> str | None:
        """Override to log and monitor this task under another name."""
        return None

    def apply(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        task_id: str | None = None,
        link: Any = None,
        link_error: Any = None,
        throw: bool | None = None,
        retries: int = 0,
        **options: Any,
    ) -> EagerResult:
        """Run the task here and now (eagerly), returning an :class:`EagerResult`."""
        from celeriac.worker.trace import eager_trace

        if throw is None:
            throw = bool(self.app.conf.task_eager_propagates)
        return eager_trace(
            self,
            list(args or ()),
            dict(kwargs or {}),
            task_id=task_id,
            link=link,
            link_error=link_error,
            throw=throw,
            retries=retries,
            options=options,
        )

    # -- request context
    @property
    def request(self) -> Context:
        stack = self._request_stack.stack
        return stack[-1] if stack else self._default_request

    def push_request(self, *args: Any, **kwargs: Any) -> None:
        self._request_stack.stack.append(Context(*args, **kwargs))

    def push_context(self, ctx: Context) -> None:
        """Make ``ctx`` this thread's ``self.request`` as it is (no copy)."""
        self._request_stack.stack.append(ctx)

    def pop_request(self) -> None:
        self._request_stack.stack.pop()

    # -- retry
    def retry(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        exc: BaseException | None = None,
        throw: bool = True,
        eta: datetime | None = None,
        countdown: float | None = None,
        max_retries: int | None = None,
        **options: Any,
    ) -> Retry:
        """Send this task again with ``retries + 1`` and raise :class:`Retry`.

        Past ``max_retries`` the exception given (or the one being handled) is re-raised, or
        :class:`MaxRetriesExceededError` when there is none.
        """
        request = self.request
        retries = request.retries + 1
        if max_retries is None:
            max_retries = self.max_retries
        if request.called_directly:
            # not running in a worker: nothing to send, behave like Celery and raise
            raise exc or Retry("task can be retried", None)
        if max_retries is not None and retries > max_retries:
            if exc is not None:
                raise exc
            raise MaxRetriesExceededError(
                f"can't retry {self.name}[{request.id}] args:{request.args} "
                f"kwargs:{request.kwargs}",
                task_args=request.args,
                task_kwargs=request.kwargs,
            )
        if not eta and countdown is None:
            countdown = self.default_retry_delay
        when: Any = eta or countdown
        sig = self.signature_from_request(request, args, kwargs, countdown, eta, retries, **options)
        nested = None
        if request.is_eager:
            nested = sig.apply()
        else:
            try:
                sig.apply_async()
            except Exception as publish_exc:
                raise Reject(publish_exc, requeue=False) from publish_exc
        ret = Retry(exc=exc, when=when, is_eager=request.is_eager, sig=sig)
        ret.eager_result = nested  # type: ignore[attr-defined]
        if throw:
            raise ret
        return ret

    def signature_from_request(
        self,
        request: Context,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        countdown: float | None = None,
        eta: datetime | None = None,
        retries: int = 0,
        **options: Any,
    ) -> Signature:
        """The signature that re-sends ``request`` (same id, same workflow links)."""
        delivery_info = request.delivery_info or {}
        queue = None
        if not delivery_info.get("exchange") and delivery_info.get("routing_key"):
            queue = delivery_info["routing_key"]
        opts: dict[str, Any] = {
            "task_id": request.id,
            "root_id": request.root_id,
            "group_id": request.group,
            "group_index": request.group_index,
            "chord": request.chord,
            "chain": request.chain,
            "link": request.callbacks,
            "link_error": request.errbacks,
            "expires": request.expires,
            "shadow": request.shadow,
            "reply_to": request.reply_to,
            "origin": request.origin,
            "retries": retries,
            "countdown": countdown,
            "eta": eta,
            "stamps": request.stamps,
            "stamped_headers": request.stamped_headers,
            "priority": (delivery_info.get("priority") if delivery_info else None),
        }
        if queue:
            opts["queue"] = queue
        elif delivery_info.get("exchange"):
            opts["exchange"] = delivery_info["exchange"]
            opts["routing_key"] = delivery_info.get("routing_key")
        if request.timelimit:
            opts["time_limit"], opts["soft_time_limit"] = request.timelimit
        if request.headers:
            extra = {
                k: v
                for k, v in request.headers.items()
                if not k.startswith("x-") and k not in _PROTOCOL_HEADERS
            }
            if extra:
                opts["headers"] = extra
        opts.update(options)
        return self.signature(
            request.args if args is None else args,
            request.kwargs if kwargs is None else kwargs,
            **{k: v for k, v in opts.items() if v is not None},
        )

    # -- signatures and results
    def signature(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Signature:
        from celeriac.canvas import Signature

        immutable = options.pop("immutable", False)
        return Signature(self.name, args, kwargs, options, immutable=immutable, app=self.app)

    subtask = signature

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        return self.signature(args, kwargs)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        return self.signature(args, kwargs, immutable=True)

    def AsyncResult(self, task_id: str) -> AsyncResult:
        from celeriac.result import AsyncResult

        return AsyncResult(task_id, app=self.app, task_name=self.name)

    def update_state(
        self, task_id: str | None = None, state: str | None = None, meta: Any = None, **_: Any
    ) -> None:
        """Store a custom state (and ``meta`` as its result) for this or another task."""
        task_id = task_id or self.request.id
        if task_id is None:
            raise ValueError("update_state needs a task id outside of a running task")
        self.app.backend.store_result(task_id, meta, state or states.PENDING, request=self.request)

    # -- hooks (override in a base class)
    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        """Called in the worker before the task runs."""

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        """Called in the worker after the task succeeded."""

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        """Called in the worker after the task failed."""

    def on_retry(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        """Called in the worker when the task is to be retried."""

    def after_return(
        self, status: str, retval: Any, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        """Called in the worker after any outcome."""

    # -- helpers
    def _check_arguments(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        sig = _signature_of(self)
        if sig is None:
            return
        try:
            sig.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.name}: {exc}") from None

    def __repr__(self) -> str:
        return f"<@task: {self.name}>"


# a redelivery flag set by brokers is not the caller's header either
_PROTOCOL_HEADERS = PROTOCOL_HEADERS | {"redelivered"}

_signatures: dict[type[Task], inspect.Signature | None] = {}


def _signature_of(task: Task) -> inspect.Signature | None:
    cls = type(task)
    if cls not in _signatures:
        fun = getattr(cls, "__wrapped__", None)
        sig: inspect.Signature | None
        try:
            if fun is None:
                sig = inspect.signature(task.run)
            else:
                sig = inspect.signature(fun)
                if task.bind:
                    params = list(sig.parameters.values())[1:]
                    sig = sig.replace(parameters=params)
        except (TypeError, ValueError):
            sig = None
        _signatures[cls] = sig
    return _signatures[cls]


def exponential_backoff(
    factor: float, retries: int, maximum: float, full_jitter: bool = False
) -> float:
    """Celery's ``retry_backoff`` delay: ``factor * 2**retries`` capped, optionally jittered."""
    countdown = min(maximum, factor * (2**retries))
    if full_jitter:
        countdown = random.randrange(int(countdown) + 1)
    return max(0.0, float(countdown))


def make_task_class(
    app: Celery, fun: Callable[..., Any], base: type[Task], options: dict[str, Any]
) -> type[Task]:
    """Build the Task subclass ``@app.task`` registers for ``fun``."""
    bind = bool(options.pop("bind", False))
    name = options.pop("name", None) or f"{fun.__module__}.{fun.__qualname__}"
    run: Any = fun if bind else staticmethod(fun)
    attrs: dict[str, Any] = {
        "name": name,
        "run": run,
        "bind": bind,
        "__doc__": fun.__doc__,
        "__module__": fun.__module__,
        "__qualname__": fun.__qualname__,
        "__wrapped__": fun,
    }
    for key, value in options.items():
        attrs[key] = value
    cls: type[Task] = type(fun.__name__, (base,), attrs)
    if cls.autoretry_for:
        cls.run = _autoretrying(cls.__dict__["run"], bind)  # type: ignore[method-assign]
    return cls


def _autoretrying(run: Any, bind: bool) -> Any:
    fun = run.__func__ if isinstance(run, staticmethod) else run

    def wrapper(self: Task, *args: Any, **kwargs: Any) -> Any:
        try:
            return fun(self, *args, **kwargs) if bind else fun(*args, **kwargs)
        except Retry:
            raise
        except self.dont_autoretry_for:
            raise
        except self.autoretry_for as exc:
            opts = dict(self.retry_kwargs)
            if self.retry_backoff:
                factor = 1 if self.retry_backoff is True else float(self.retry_backoff)
                opts["countdown"] = exponential_backoff(
                    factor, self.request.retries, self.retry_backoff_max, self.retry_jitter
                )
            raise self.retry(exc=exc, **opts) from None

    return wrapper


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def eta_from_countdown(countdown: float, now: datetime | None = None) -> datetime:
    return (now or utcnow()) + timedelta(seconds=countdown)


def caller_task() -> Task | None:
    """The task this code is running inside, if any."""
    return current_task()
