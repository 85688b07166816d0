"""Settings: Celery's names and defaults, ``config_from_object``, and environment overrides."""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

from celeriac.errors import ConfigurationError

__all__ = ["DEFAULTS", "ENV_OVERRIDES", "Settings"]

#: Every setting celeriac reads, with Celery's default (``celery/app/defaults.py``).
DEFAULTS: dict[str, Any] = {
    "broker_url": None,
    "broker_transport_options": {},
    "broker_connection_timeout": 4.0,
    "broker_connection_retry": True,
    "broker_connection_retry_on_startup": True,
    "broker_connection_max_retries": 100,
    "broker_heartbeat": 120.0,
    "broker_use_ssl": False,
    "broker_pool_limit": 10,
    "result_backend": None,
    "result_backend_transport_options": {},
    "result_serializer": "json",
    "result_accept_content": None,
    "result_expires": 86400,
    "result_extended": False,
    "result_persistent": False,
    "result_compression": None,
    "result_failure_expires": None,
    "result_backend_always_retry": False,
    "result_backend_max_retries": float("inf"),
    "result_backend_base_sleep_between_retries_ms": 10,
    "result_backend_max_sleep_between_retries_ms": 10000,
    "redis_backend_use_ssl": None,
    "redis_backend_health_check_interval": None,
    "redis_socket_timeout": 120.0,
    "redis_socket_connect_timeout": None,
    "redis_socket_keepalive": False,
    "redis_retry_on_timeout": False,
    "redis_max_connections": None,
    "task_serializer": "json",
    "task_compression": None,
    "accept_content": ["json"],
    "task_protocol": 2,
    "task_acks_late": False,
    "task_acks_on_failure_or_timeout": True,
    "task_reject_on_worker_lost": False,
    "task_ignore_result": False,
    "task_store_errors_even_if_ignored": False,
    "task_track_started": False,
    "task_default_queue": "celery",
    "task_default_exchange": None,
    "task_default_exchange_type": "direct",
    "task_default_routing_key": None,
    "task_default_delivery_mode": 2,
    "task_default_priority": None,
    "task_default_rate_limit": None,
    "task_default_retry_delay": 180,
    "task_queues": None,
    "task_routes": None,
    "task_create_missing_queues": True,
    "task_queue_max_priority": None,
    "task_always_eager": False,
    "task_eager_propagates": False,
    "task_store_eager_result": False,
    "task_time_limit": None,
    "task_soft_time_limit": None,
    "task_publish_retry": True,
    "task_publish_retry_policy": {
        "max_retries": 3,
        "interval_start": 0,
        "interval_max": 1,
        "interval_step": 0.2,
    },
    "task_send_sent_event": False,
    "worker_prefetch_multiplier": 4,
    "worker_concurrency": None,
    "worker_max_tasks_per_child": None,
    "worker_max_memory_per_child": None,
    "worker_send_task_events": False,
    "worker_enable_remote_control": True,
    "worker_deduplicate_successful_tasks": False,
    "worker_eta_task_limit": None,
    "worker_soft_shutdown_timeout": 0.0,
    "worker_max_message_size": 64 * 1024 * 1024,
    "worker_hostname": None,
    "worker_pool": "prefork",
    "worker_start_method": "fork",
    "timezone": None,
    "enable_utc": True,
    "imports": (),
    "include": (),
}

#: Environment variables that win over the configured value (Celery does the same with
#: ``CELERY_BROKER_URL`` and ``CELERY_RESULT_BACKEND``); the first one set is used.
ENV_OVERRIDES: dict[str, tuple[str, ...]] = {
    "broker_url": ("CELERIAC_BROKER_URL", "CELERY_BROKER_URL"),
    "result_backend": ("CELERIAC_RESULT_BACKEND", "CELERY_RESULT_BACKEND"),
}

# Celery 3-style upper-case names still found in old projects.
_OLD_NAMES: dict[str, str] = {
    "BROKER_URL": "broker_url",
    "CELERY_RESULT_BACKEND": "result_backend",
    "CELERY_TASK_SERIALIZER": "task_serializer",
    "CELERY_RESULT_SERIALIZER": "result_serializer",
    "CELERY_ACCEPT_CONTENT": "accept_content",
    "CELERY_ALWAYS_EAGER": "task_always_eager",
    "CELERY_EAGER_PROPAGATES_EXCEPTIONS": "task_eager_propagates",
    "CELERY_ACKS_LATE": "task_acks_late",
    "CELERY_IGNORE_RESULT": "task_ignore_result",
    "CELERY_DEFAULT_QUEUE": "task_default_queue",
    "CELERY_ROUTES": "task_routes",
    "CELERY_TIMEZONE": "timezone",
    "CELERY_ENABLE_UTC": "enable_utc",
    "CELERYD_PREFETCH_MULTIPLIER": "worker_prefetch_multiplier",
    "CELERYD_CONCURRENCY": "worker_concurrency",
    "CELERYD_TASK_TIME_LIMIT": "task_time_limit",
    "CELERYD_TASK_SOFT_TIME_LIMIT": "task_soft_time_limit",
    "CELERY_TASK_RESULT_EXPIRES": "result_expires",
}


def _normalize_key(key: str, namespace: str | None) -> str | None:
    if namespace:
        prefix = namespace.rstrip("_") + "_"
        if not key.startswith(prefix):
            return None
        return key[len(prefix) :].lower()
    if key in _OLD_NAMES:
        return _OLD_NAMES[key]
    if key.islower():
        return key
    return None


class Settings(MutableMapping[str, Any]):
    """The app's configuration: a mapping that also reads as attributes (``conf.broker_url``).

    Values set here win over defaults; the variables in :data:`ENV_OVERRIDES` win over both.
    """

    def __init__(self, initial: Mapping[str, Any] | None = None) -> None:
        changes = dict(initial or {})
        object.__setattr__(self, "_changes", changes)
        # defaults and changes merged, so a read is one dict lookup (publishing reads several)
        object.__setattr__(self, "_values", {**DEFAULTS, **changes})

    # -- mapping protocol
    def __getitem__(self, key: str) -> Any:
        if key in ENV_OVERRIDES:
            for name in ENV_OVERRIDES[key]:
                value = os.environ.get(name)
                if value:
                    return value
        return self._values[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._changes[key] = value
        self._values[key] = value

    def __delitem__(self, key: str) -> None:
        del self._changes[key]
        if key in DEFAULTS:
            self._values[key] = DEFAULTS[key]
        else:
            del self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, key: object) -> bool:
        return key in self._values

    # -- attribute access
    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"no setting named {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    # -- loading
    def changes(self) -> dict[str, Any]:
        """The settings that differ from the defaults."""
        return dict(self._changes)

    def update_from(self, source: Mapping[str, Any], namespace: str | None = None) -> None:
        """Take every recognised setting from ``source`` (see :meth:`config_from_object`)."""
        for key, value in source.items():
            name = _normalize_key(key, namespace)
            if name is not None:
                self[name] = value

    def config_from_object(self, obj: object | str, namespace: str | None = None) -> None:
        """Load settings from a module, a ``"module"``/``"module:attr"`` name, a class or a dict.

        With ``namespace="CELERY"`` only ``CELERY_*`` names are read and the prefix is removed
        (``CELERY_BROKER_URL`` -> ``broker_url``), as Django projects configure Celery.
        """
        if isinstance(obj, str):
            obj = _import_object(obj)
        if isinstance(obj, Mapping):
            self.update_from(obj, namespace)
            return
        self.update_from({k: getattr(obj, k) for k in dir(obj) if not k.startswith("_")}, namespace)

    def __repr__(self) -> str:
        return f"<Settings {self.changes()!r}>"


def _import_object(path: str) -> object:
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot load configuration from {path!r}: {exc}") from exc
    if not attr:
        return module
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigurationError(
            f"cannot load configuration from {path!r}: module has no {attr!r}"
        ) from None
