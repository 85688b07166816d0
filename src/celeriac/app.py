"""The application: configuration, task registry, publishing and the result backend."""

from __future__ import annotations

import contextlib
import fnmatch
import importlib
import os
import socket
import threading
import uuid
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, overload

from celeriac import protocol, signals
from celeriac.config import Settings
from celeriac.context import current_task
from celeriac.errors import ConfigurationError, NotRegistered
from celeriac.task import Task, make_task_class

if TYPE_CHECKING:
    from celeriac.backends.base import Backend
    from celeriac.result import AsyncResult as AsyncResultT
    from celeriac.transports.base import Transport
    from celeriac.worker.executor import Executor
    from celeriac.worker.worker import WorkController

__all__ = ["Celery", "TaskRegistry", "current_app", "shared_task"]

DEFAULT_BROKER_URL = "amqp://guest:guest@localhost:5672//"


class TaskRegistry(dict[str, Task]):
    """Registered tasks by name; a missing name raises :class:`NotRegistered`."""

    def __missing__(self, key: str) -> Task:
        raise NotRegistered(key)

    def register(self, task: Task) -> None:
        self[task.name] = task

    def unregister(self, name: str) -> None:
        self.pop(name, None)


_current: Celery | None = None
_all_apps: weakref.WeakSet[Celery] = weakref.WeakSet()
_shared_tasks: list[tuple[Callable[..., Any], dict[str, Any]]] = []


def current_app() -> Celery:
    """The most recently created (or ``set_current``) app; a default one if there is none."""
    global _current
    if _current is None:
        _current = Celery("default")
    return _current


class _ProducerLocal(threading.local):
    def __init__(self) -> None:
        self.transport: Transport | None = None
        self.declared: set[str] = set()


class Celery:
    """A celeriac application, with Celery's constructor and methods.

    Args:
        main: the name of the main module (task names default to ``module.function``).
        broker: the broker URL (``broker_url``).
        backend: the result backend URL (``result_backend``).
        include: modules to import when the worker starts.
        config_source: an object or module name passed to :meth:`config_from_object`.
    """

    def __init__(
        self,
        main: str | None = None,
        broker: str | None = None,
        backend: str | None = None,
        include: Sequence[str] | None = None,
        config_source: object | str | None = None,
        set_as_current: bool = True,
        task_cls: type[Task] | str | None = None,
        **settings: Any,
    ) -> None:
        self.main = main
        self.conf = Settings()
        if config_source is not None:
            self.conf.config_from_object(config_source)
        if broker:
            self.conf.broker_url = broker
        if backend:
            self.conf.result_backend = backend
        if include:
            self.conf.include = tuple(include)
        self.conf.update(settings)
        self.Task: type[Task] = _resolve_task_cls(task_cls)
        self.tasks = TaskRegistry()
        self.steps: dict[str, set[type[Any]]] = {"worker": set(), "consumer": set()}
        self._backend: Backend | None = None
        self._backend_lock = threading.Lock()
        self._producer = _ProducerLocal()
        self._producers: list[Transport] = []
        self._producers_lock = threading.Lock()
        self.oid = str(uuid.uuid5(uuid.NAMESPACE_OID, f"{os.getpid()}-{id(self)}"))
        self._finalized = False
        self._autodiscover: list[tuple[Sequence[str], str]] = []
        self.origin = f"gen{os.getpid()}@{socket.gethostname()}"
        _all_apps.add(self)
        if set_as_current:
            self.set_current()
        for fun, opts in _shared_tasks:
            self._register_function(fun, dict(opts))

    # -- configuration
    def set_current(self) -> None:
        global _current
        _current = self

    def config_from_object(
        self, obj: object | str, namespace: str | None = None, force: bool = False
    ) -> None:
        self.conf.config_from_object(obj, namespace=namespace)
        self._reset_backend()

    def config_from_envvar(self, variable_name: str, silent: bool = False) -> bool:
        module_name = os.environ.get(variable_name)
        if not module_name:
            if silent:
                return False
            raise ConfigurationError(f"environment variable {variable_name!r} is not set")
        self.config_from_object(module_name)
        return True

    def _reset_backend(self) -> None:
        with self._backend_lock:
            self._backend = None

    @property
    def broker_url(self) -> str:
        url: str | None = self.conf.broker_url
        return url or DEFAULT_BROKER_URL

    @property
    def timezone(self) -> Any:
        name = self.conf.timezone
        if not name or name in ("UTC", "utc"):
            return timezone.utc
        from zoneinfo import ZoneInfo

        return ZoneInfo(str(name))

    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    # -- tasks
    @overload
    def task(self, fun: Callable[..., Any]) -> Task: ...

    @overload
    def task(
        self,
        *,
        name: str | None = ...,
        bind: bool = ...,
        base: type[Task] | None = ...,
        **options: Any,
    ) -> Callable[[Callable[..., Any]], Task]: ...

    def task(self, *args: Any, **options: Any) -> Any:
        """Register a function as a task: ``@app.task`` or ``@app.task(bind=True, ...)``."""
        if len(args) == 1 and callable(args[0]) and not options:
            return self._register_function(args[0], {})
        if args:
            raise TypeError("app.task takes the function alone, or keyword options only")

        def decorate(fun: Callable[..., Any]) -> Task:
            return self._register_function(fun, dict(options))

        return decorate

    def _register_function(self, fun: Callable[..., Any], options: dict[str, Any]) -> Task:
        base = options.pop("base", None) or self.Task
        if fun.__module__ == "__main__" and self.main and "name" not in options:
            options["name"] = f"{self.main}.{fun.__qualname__}"
        cls = make_task_class(self, fun, base, options)
        existing = self.tasks.get(cls.name)
        if existing is not None and getattr(type(existing), "__wrapped__", None) is fun:
            return existing
        task = cls()
        task.bind_app(self)
        self.tasks.register(task)
        return task

    def register_task(self, task: Task | type[Task]) -> Task:
        """Register a class-based task (``class MyTask(Task): name = ...; def run(...)``)."""
        instance = task() if isinstance(task, type) else task
        if not instance.name:
            cls = type(instance)
            instance.name = f"{cls.__module__}.{cls.__qualname__}"
        instance.bind_app(self)
        self.tasks.register(instance)
        return instance

    def autodiscover_tasks(
        self,
        packages: Sequence[str] | Callable[[], Sequence[str]],
        related_name: str = "tasks",
        force: bool = True,
    ) -> None:
        """Import ``<package>.tasks`` for each package (now, as ``force`` is the default)."""
        pkgs = packages() if callable(packages) else packages
        for package in pkgs:
            try:
                importlib.import_module(f"{package}.{related_name}")
            except ModuleNotFoundError as exc:
                if exc.name != f"{package}.{related_name}":
                    raise

    def loader_import_modules(self) -> None:
        """Import ``imports`` and ``include`` (what the worker does at start)."""
        for module in (*tuple(self.conf.imports or ()), *tuple(self.conf.include or ())):
            importlib.import_module(module)

    # -- results
    @property
    def backend(self) -> Backend:
        backend = self._backend
        if backend is not None:
            return backend  # every task reads this: no lock once it exists
        with self._backend_lock:
            if self._backend is None:
                from celeriac.backends.registry import backend_for_url

                self._backend = backend_for_url(self, self.conf.result_backend)
            return self._backend

    def AsyncResult(self, task_id: str, task_name: str | None = None) -> AsyncResultT:
        from celeriac.result import AsyncResult

        return AsyncResult(task_id, app=self, task_name=task_name)

    # -- publishing
    def connection(self, url: str | None = None, heartbeat: float | None = None) -> Transport:
        """A new, unconnected transport to the broker.

        ``broker_transport_options`` win over the connection settings (``broker_heartbeat``,
        ``broker_connection_timeout``, ``broker_use_ssl``). Publishing connections pass
        ``heartbeat=0`` as Celery's producers do; the worker's passes ``broker_heartbeat``.
        """
        from celeriac.transports.registry import transport_for_url

        conf = self.conf
        options: dict[str, Any] = {
            "heartbeat": conf.broker_heartbeat if heartbeat is None else heartbeat,
            "connect_timeout": conf.broker_connection_timeout,
        }
        if conf.broker_use_ssl:
            options["ssl"] = conf.broker_use_ssl
        options.update(conf.broker_transport_options or {})
        return transport_for_url(url or self.broker_url, **options)

    def producer_transport(self) -> Transport:
        """This thread's publishing connection, opened once and reused for every send."""
        local = self._producer
        transport = local.transport
        if transport is None or not transport.connected:
            transport = self.connection(heartbeat=0)
            transport.connect()
            local.transport = transport
            local.declared = set()
            with self._producers_lock:
                self._producers.append(transport)
        return transport

    def close(self) -> None:
        """Close every publishing connection and the backend."""
        with self._producers_lock:
            producers, self._producers = self._producers, []
        for transport in producers:
            with contextlib.suppress(Exception):  # closing is best effort
                transport.close()
        self._producer = _ProducerLocal()
        if self._backend is not None:
            self._backend.close()

    def route_for(
        self,
        name: str,
        args: Any = None,
        kwargs: Any = None,
        options: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The routing options ``task_routes`` gives task ``name`` (empty when none)."""
        routes = self.conf.task_routes
        if not routes:
            return {}
        if isinstance(routes, (Mapping, Callable)):  # type: ignore[arg-type]
            routes = [routes]
        for route in routes:
            found = _match_route(route, name, args, kwargs, options or {})
            if found is not None:
                return {"queue": found} if isinstance(found, str) else dict(found)
        return {}

    def declare_queue(self, transport: Transport, queue: str, declared: set[str]) -> None:
        if queue in declared:
            return
        arguments: dict[str, Any] = {}
        max_priority = self.conf.task_queue_max_priority
        if max_priority is not None:
            arguments["x-max-priority"] = int(max_priority)
        transport.declare_exchange(queue, "direct", durable=True)
        transport.declare_queue(queue, durable=True, arguments=arguments or None)
        transport.bind_queue(queue, queue, queue)
        declared.add(queue)

    def send_task(
        self,
        name: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        countdown: float | None = None,
        eta: datetime | str | None = None,
        task_id: str | None = None,
        expires: float | datetime | str | None = None,
        queue: str | None = None,
        routing_key: str | None = None,
        exchange: str | None = None,
        priority: int | None = None,
        serializer: str | None = None,
        compression: str | None = None,
        headers: Mapping[str, Any] | None = None,
        link: Any = None,
        link_error: Any = None,
        ignore_result: bool | None = None,
        time_limit: float | None = None,
        soft_time_limit: float | None = None,
        retries: int = 0,
        chain: Any = None,
        chord: Any = None,
        group_id: str | None = None,
        group_index: int | None = None,
        root_id: str | None = None,
        parent_id: str | None = None,
        shadow: str | None = None,
        reply_to: str | None = None,
        origin: str | None = None,
        stamps: Mapping[str, Any] | None = None,
        stamped_headers: Sequence[str] | None = None,
        replaced_task_nesting: int = 0,
        **options: Any,
    ) -> AsyncResultT:
        """Publish a task by name (the worker need not share this process's code)."""
        from celeriac.result import AsyncResult

        conf = self.conf
        task_id = task_id or protocol.new_task_id()
        if args is not None and not isinstance(args, (list, tuple)):
            raise TypeError("task args must be a list or tuple")
        if kwargs is not None and not isinstance(kwargs, Mapping):
            raise TypeError("task keyword arguments must be a mapping")
        now = None
        if countdown is not None or isinstance(expires, (int, float)):
            now = datetime.now(timezone.utc)
            if countdown is not None:
                eta = now + timedelta(seconds=countdown)
            if isinstance(expires, (int, float)):
                expires = now + timedelta(seconds=expires)
        parent = current_task()
        if parent is not None:
            request = parent.request
            if not request.is_eager and request.id:
                parent_id = parent_id or request.id
                root_id = root_id or request.root_id or request.id
        if not (queue or routing_key or exchange):
            route = self.route_for(name, args, kwargs, options)
            queue = route.get("queue")
            exchange = route.get("exchange", exchange)
            routing_key = route.get("routing_key", routing_key)
            priority = route.get("priority", priority)
        queue = queue or conf.task_default_queue
        message = protocol.build_task_message(
            name,
            task_id,
            tuple(args or ()),
            dict(kwargs or {}),
            eta=eta,
            expires=expires,
            retries=retries,
            time_limit=time_limit,
            soft_time_limit=soft_time_limit,
            group_id=group_id,
            group_index=group_index,
            root_id=root_id,
            parent_id=parent_id,
            shadow=shadow,
            origin=origin or self.origin,
            ignore_result=bool(ignore_result),
            replaced_task_nesting=replaced_task_nesting,
            stamped_headers=list(stamped_headers) if stamped_headers else None,
            stamps=dict(stamps) if stamps else None,
            callbacks=_sig_list(link),
            errbacks=_sig_list(link_error),
            chain=list(chain) if chain else None,
            chord=dict(chord) if chord else None,
            headers=headers,
            reply_to=reply_to or self.oid,
            priority=priority,
            serializer=serializer or conf.task_serializer,
            compression=compression or conf.task_compression,
            delivery_mode=conf.task_default_delivery_mode,
            now=now,
        )
        if signals.before_task_publish.receivers:
            signals.before_task_publish.send(
                sender=name,
                body=message.body,
                exchange=exchange or "",
                routing_key=routing_key or queue,
                headers=message.headers,
                properties=message.properties,
            )
        backend = self._backend or (self.backend if self.conf.result_backend else None)
        if backend is not None and not ignore_result:
            backend.on_task_call(task_id)
        self._publish(message, queue, exchange, routing_key)
        if signals.after_task_publish.receivers:
            signals.after_task_publish.send(
                sender=name,
                body=message.body,
                headers=message.headers,
                exchange=exchange or "",
                routing_key=routing_key or queue,
            )
        return AsyncResult(task_id, app=self, task_name=name)

    def _publish(
        self,
        message: protocol.OutgoingMessage,
        queue: str,
        exchange: str | None,
        routing_key: str | None,
    ) -> None:
        transport = self.producer_transport()
        if exchange:
            transport.publish(
                message.body, exchange, routing_key or queue, message.headers, message.properties
            )
            return
        # a direct queue gets the default exchange with its name as key, as Celery does
        self.declare_queue(transport, queue, self._producer.declared)
        transport.publish(
            message.body, "", routing_key or queue, message.headers, message.properties
        )

    # -- worker
    def override(self, broker_url: str | None = None, result_backend: str | None = None) -> None:
        """Take the broker and result backend given on the command line over the app's."""
        if broker_url:
            self.conf.broker_url = broker_url
        if result_backend:
            self.conf.result_backend = result_backend
            self._reset_backend()

    def worker_queues(self, queues: Sequence[str] = (), exclude: Sequence[str] = ()) -> list[str]:
        """The queues a worker consumes: ``queues`` (``-Q``) or the default queue, without
        those in ``exclude`` (``-X``).

        Raises:
            ConfigurationError: nothing is left to consume.
        """
        skip = set(exclude)
        kept = [q for q in (queues or [self.conf.task_default_queue]) if q not in skip]
        if not kept:
            raise ConfigurationError(f"every queue is excluded (-X {','.join(sorted(skip))})")
        return kept

    @property
    def executor(self) -> Executor:
        """How a worker runs this app's tasks (celeriac's tracer)."""
        from celeriac.worker.executor import DEFAULT_EXECUTOR

        return DEFAULT_EXECUTOR

    def Worker(self, **kwargs: Any) -> WorkController:
        from celeriac.worker.worker import WorkController

        return WorkController(self, **kwargs)

    def __repr__(self) -> str:
        return f"<Celery {self.main or '__main__'} at {id(self):#x}>"


App = Celery


def shared_task(*args: Any, **options: Any) -> Any:
    """Like ``@app.task`` but registered with every app, current and future."""

    def decorate(fun: Callable[..., Any]) -> Task:
        _shared_tasks.append((fun, dict(options)))
        task: Task | None = None
        for app in list(_all_apps):
            task = app._register_function(fun, dict(options))
        if task is None:
            task = current_app()._register_function(fun, dict(options))
        return task

    if len(args) == 1 and callable(args[0]) and not options:
        return decorate(args[0])
    return decorate


def _sig_list(value: Any) -> list[Any] | None:
    if value is None:
        return None
    if isinstance(value, Mapping):
        return [dict(value)]
    return [dict(v) for v in value] or None


def _match_route(route: Any, name: str, args: Any, kwargs: Any, options: Mapping[str, Any]) -> Any:
    if callable(route) and not isinstance(route, Mapping):
        return route(name, args, kwargs, options)
    if isinstance(route, Mapping):
        if name in route:
            return route[name]
        for pattern, target in route.items():
            if any(ch in pattern for ch in "*?[") and fnmatch.fnmatchcase(name, pattern):
                return target
    return None


def _resolve_task_cls(task_cls: type[Task] | str | None) -> type[Task]:
    if task_cls is None:
        return Task
    if isinstance(task_cls, str):
        module_name, _, attr = task_cls.replace(":", ".").rpartition(".")
        cls: type[Task] = getattr(importlib.import_module(module_name), attr)
        return cls
    return task_cls


def _iterable(value: Any) -> Iterable[Any]:
    return value if isinstance(value, (list, tuple)) else [value]
