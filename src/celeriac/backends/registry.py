"""Pick a result backend class by URL scheme."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from celeriac.backends.base import Backend, DisabledBackend
from celeriac.errors import ConfigurationError

if TYPE_CHECKING:
    from celeriac.app import Celery

__all__ = ["backend_for_url", "register_backend"]

_BACKENDS: dict[str, str] = {
    "memory": "celeriac.backends.memory:MemoryBackend",
    "cache+memory": "celeriac.backends.memory:MemoryBackend",
    "disabled": "celeriac.backends.base:DisabledBackend",
    "redis": "celeriac.backends.redis:RedisBackend",
    "rediss": "celeriac.backends.redis:RedisBackend",
    "redis+socket": "celeriac.backends.redis:RedisBackend",
    "rpc": "celeriac.backends.rpc:RPCBackend",
}


def register_backend(scheme: str, path: str) -> None:
    """Make ``scheme://`` URLs load the backend class at ``"module:Class"``."""
    _BACKENDS[scheme] = path


def backend_for_url(app: Celery, url: str | None) -> Backend:
    if not url:
        return DisabledBackend(app, None)
    scheme = url.split("://", 1)[0] if "://" in url else url
    path = _BACKENDS.get(scheme)
    if path is None:
        known = ", ".join(sorted(_BACKENDS))
        raise ConfigurationError(
            f"unknown result backend {scheme!r} in {url!r}; known backends: {known}"
        )
    module_name, _, cls_name = path.partition(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    backend: Backend = cls(app, url if "://" in url else None)
    return backend
