"""Load and run an existing ``celery.Celery`` app: its settings, queues, tasks and signals.

celeriac's consumer, decoder, pools and ack path run the worker; the tasks run through
Celery's own tracer (``celery.app.trace.build_tracer``), so they keep Celery's semantics:
the request context, retries, canvas, result backend and task signals are Celery's.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from celeriac import signals
from celeriac.app import Celery
from celeriac.errors import ConfigurationError

if TYPE_CHECKING:
    from celeriac.compat.celery_events import WorkerEvents
    from celeriac.transports.base import Transport
    from celeriac.worker.executor import Executor
    from celeriac.worker.worker import WorkController

__all__ = ["CeleryHost", "is_celery_app", "translate_settings"]

logger = logging.getLogger("celeriac.compat")

#: Settings read from the Celery app as they are (same name, same meaning).
_SAME_SETTINGS = (
    "broker_transport_options",
    "broker_connection_timeout",
    "broker_connection_retry",
    "broker_connection_retry_on_startup",
    "broker_connection_max_retries",
    "broker_heartbeat",
    "broker_use_ssl",
    "accept_content",
    "task_default_queue",
    "task_queue_max_priority",
    "task_time_limit",
    "task_soft_time_limit",
    "task_acks_late",
    "task_acks_on_failure_or_timeout",
    "task_reject_on_worker_lost",
    "result_backend",
    "result_expires",
    "worker_prefetch_multiplier",
    "worker_concurrency",
    "worker_max_tasks_per_child",
    "worker_max_memory_per_child",
    "worker_soft_shutdown_timeout",
    "worker_pool",
    "timezone",
    "enable_utc",
)


def is_celery_app(value: Any) -> bool:
    """Whether ``value`` is a ``celery.Celery`` instance (without importing Celery)."""
    for cls in type(value).__mro__:
        if cls.__name__ == "Celery" and cls.__module__.startswith("celery."):
            return True
    return False


def translate_settings(conf: Mapping[str, Any]) -> dict[str, Any]:
    """celeriac settings from a Celery app's configuration (``app.conf``)."""
    out: dict[str, Any] = {}
    for name in _SAME_SETTINGS:
        try:
            value = conf[name]
        except KeyError:
            continue
        if value is not None:
            out[name] = value
    url = conf.get("broker_read_url") or conf.get("broker_url")
    if isinstance(url, (list, tuple)):
        url = ";".join(str(u) for u in url)
    if url:
        out["broker_url"] = str(url)
    accept = out.get("accept_content")
    if accept is not None:
        out["accept_content"] = list(accept)
    return out


class CeleryHost(Celery):
    """The celeriac app a worker runs for a Celery app.

    Settings come from the Celery app once, when the host is made; the registry, the result
    backend and the tracer are the Celery app's own.
    """

    def __init__(self, celery_app: Any) -> None:
        super().__init__(celery_app.main, set_as_current=False)
        self.celery_app = celery_app
        self.conf.update(translate_settings(celery_app.conf))
        self._bridged = False
        self._events: WorkerEvents | None = None

    # -- what the worker reads
    @property
    def backend(self) -> Any:
        """Celery's result backend: results, chords and errbacks are stored its way."""
        return self.celery_app.backend

    @property
    def executor(self) -> Executor:
        from celeriac.compat.celery_executor import CELERY_EXECUTOR

        return CELERY_EXECUTOR

    def loader_import_modules(self) -> None:
        """What ``celery worker`` does at start: import ``imports``/``include`` and the
        autodiscovered modules, then finalize the app (its registry becomes the worker's)."""
        from celery import _state
        from celery.app import trace

        capp = self.celery_app
        capp.loader.init_worker()
        steps = sorted(
            f"{step.__module__}.{step.__qualname__}"
            for kind in ("worker", "consumer")
            for step in capp.steps.get(kind, ())
        )
        if steps:
            # they are written against Celery's worker internals; not running them silently
            # would drop what the user added
            raise ConfigurationError(
                f"celery bootsteps in app.steps are not supported by celeriac: {', '.join(steps)}"
            )
        trace.setup_worker_optimizations(capp)
        # the tasks of a worker must not block on other results (``result.get()`` in a task)
        _state._set_task_join_will_block(True)
        self.tasks = capp.tasks

    def override(self, broker_url: str | None = None, result_backend: str | None = None) -> None:
        """Command-line settings go to the Celery app too: its producer (retries, canvas)
        and its result backend use them."""
        conf = self.celery_app.conf
        if broker_url:
            conf.broker_url = broker_url
        if result_backend:
            conf.result_backend = result_backend
        self.conf.update(translate_settings(conf))

    def worker_queues(self, queues: Sequence[str] = (), exclude: Sequence[str] = ()) -> list[str]:
        """As ``celery worker``: ``-Q`` or every queue of ``task_queues`` (else the default
        queue), without those of ``-X``."""
        if not queues:
            queues = list(self.celery_app.amqp.queues.consume_from)
        return super().worker_queues(queues, exclude)

    def declare_queue(self, transport: Transport, queue: str, declared: set[str]) -> None:
        """Declare ``queue`` as its ``task_queues`` entry says (exchange, type, routing key,
        arguments); a queue not listed is made as Celery makes missing queues."""
        if queue in declared:
            return
        entry = self.celery_app.amqp.queues.get(queue)
        if entry is None:
            super().declare_queue(transport, queue, declared)
            return
        from kombu.transport.base import to_rabbitmq_queue_arguments

        arguments = to_rabbitmq_queue_arguments(
            dict(entry.queue_arguments or {}),
            expires=entry.expires,
            message_ttl=entry.message_ttl,
            max_length=entry.max_length,
            max_length_bytes=entry.max_length_bytes,
            max_priority=entry.max_priority,
        )
        exchange = entry.exchange
        if exchange is not None and exchange.name:
            _declare_exchange(transport, exchange)
        transport.declare_queue(
            entry.name,
            durable=bool(entry.durable),
            exclusive=bool(entry.exclusive),
            auto_delete=bool(entry.auto_delete),
            arguments=arguments or None,
        )
        if exchange is not None and exchange.name:
            transport.bind_queue(
                entry.name, exchange.name, entry.routing_key or "", entry.binding_arguments
            )
        for binding in entry.bindings or ():
            if binding.exchange is not None and binding.exchange.name:
                _declare_exchange(transport, binding.exchange)
                transport.bind_queue(
                    entry.name, binding.exchange.name, binding.routing_key or "", binding.arguments
                )
        declared.add(queue)

    def Worker(
        self,
        task_events: bool | None = None,
        heartbeat: bool = True,
        heartbeat_interval: float | None = None,
        **kwargs: Any,
    ) -> WorkController:
        """The worker, with Celery's monitoring events: task events with ``task_events``
        (``-E``; default ``worker_send_task_events``), worker heartbeats every
        ``heartbeat_interval`` seconds (default 2) unless ``heartbeat`` is false
        (``--without-heartbeat``)."""
        from celeriac.compat.celery_events import HEARTBEAT_INTERVAL, WorkerEvents
        from celeriac.compat.celery_executor import use_events
        from celeriac.worker.worker import default_hostname

        if task_events is None:
            task_events = bool(self.celery_app.conf.worker_send_task_events)
        self._events = None
        if task_events or heartbeat:
            # the node name the worker will have (it is made from the same two values)
            hostname = default_hostname(kwargs.get("hostname") or self.conf.worker_hostname)
            self._events = WorkerEvents(
                self.celery_app,
                hostname,
                task_events,
                heartbeat,
                heartbeat_interval or HEARTBEAT_INTERVAL,
            )
        use_events(self._events)
        self._bridge_signals()
        return super().Worker(**kwargs)

    # -- Celery's worker signals, sent as ``celery worker`` sends them
    def _bridge_signals(self) -> None:
        if self._bridged:
            return
        self._bridged = True
        signals.worker_init.connect(self._on_worker_init)
        signals.worker_ready.connect(self._on_worker_ready)
        signals.worker_shutdown.connect(self._on_worker_shutdown)

    def _mine(self, sender: Any) -> bool:
        return getattr(sender, "app", None) is self

    def _on_worker_init(self, sender: Any = None, **_: Any) -> None:
        if not self._mine(sender):
            return
        from celery import signals as celery_signals
        from celery.app.trace import build_tracer

        capp = self.celery_app
        celery_signals.celeryd_init.send(
            sender=sender.hostname, instance=sender, conf=capp.conf, options={}
        )
        celery_signals.worker_init.send(sender=sender)
        # as Celery's consumer does: one tracer per task, built once with the node name
        for name, task in capp.tasks.items():
            task.__trace__ = build_tracer(name, task, capp.loader, sender.hostname, app=capp)
        events = self._events
        if celery_signals.task_received.receivers or (events is not None and events.task_events):
            # bridged only when needed: otherwise the strategy skips the send
            signals.task_received.connect(self._on_task_received)
        if sender.pool_name == "solo":
            # the solo pool is the worker's process: Celery sends this for it too
            celery_signals.worker_process_init.send(sender=sender.hostname)

    def _on_task_received(self, sender: Any = None, request: Any = None, **_: Any) -> None:
        if not self._mine(sender):
            return
        from celery import signals as celery_signals

        events = self._events
        if events is not None:
            m = request.message
            events.task(
                request.task,
                "task-received",
                uuid=m.id,
                name=m.name,
                args=m.argsrepr,
                kwargs=m.kwargsrepr,
                root_id=m.root_id,
                parent_id=m.parent_id,
                retries=m.retries,
                eta=m.eta,
                expires=m.expires,
            )
        if celery_signals.task_received.receivers:
            celery_signals.task_received.send(sender=sender, request=request)

    def _on_worker_ready(self, sender: Any = None, **_: Any) -> None:
        if self._mine(sender):
            from celery import signals as celery_signals

            if self._events is not None:
                self._events.start(sender.state)
            celery_signals.worker_ready.send(sender=sender)

    def _on_worker_shutdown(self, sender: Any = None, **_: Any) -> None:
        if self._mine(sender):
            from celery import signals as celery_signals

            if self._events is not None:
                self._events.stop()
            celery_signals.worker_shutdown.send(sender=sender)
            self.celery_app.loader.shutdown_worker()

    def __repr__(self) -> str:
        return f"<CeleryHost of {self.celery_app!r}>"


def _declare_exchange(transport: Transport, exchange: Any) -> None:
    transport.declare_exchange(
        exchange.name,
        exchange.type or "direct",
        durable=bool(exchange.durable),
        auto_delete=bool(exchange.auto_delete),
        arguments=exchange.arguments or None,
    )
