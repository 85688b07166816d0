"""In-process result backend (``memory://``) for tests and the embedded broker."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from celeriac.backends.base import KeyValueBackend

if TYPE_CHECKING:
    from celeriac.app import Celery

__all__ = ["MemoryBackend", "reset_all"]


class _Store:
    def __init__(self) -> None:
        self.data: dict[str, tuple[bytes, float | None]] = {}
        self.changed = threading.Condition()


_stores: dict[str, _Store] = {}
_stores_lock = threading.Lock()


def _store_for(name: str) -> _Store:
    with _stores_lock:
        store = _stores.get(name)
        if store is None:
            store = _stores[name] = _Store()
        return store


def reset_all() -> None:
    """Forget every stored result (tests)."""
    with _stores_lock:
        _stores.clear()


class MemoryBackend(KeyValueBackend):
    """Results kept in this process, shared by every app using the same URL host part.

    Values are stored encoded, exactly as a network backend would hold them, so the encoding
    path is exercised; readers are woken when a value changes instead of polling.
    """

    def __init__(self, app: Celery, url: str | None = None) -> None:
        super().__init__(app, url)
        name = (url or "memory://").split("://", 1)[-1].strip("/")
        self._shelf = _store_for(name)

    def _get(self, key: str) -> bytes | None:
        entry = self._shelf.data.get(key)
        if entry is None:
            return None
        value, deadline = entry
        if deadline is not None and time.monotonic() > deadline:
            self._shelf.data.pop(key, None)
            return None
        return value

    def _set(self, key: str, value: bytes, expires: float | None) -> None:
        deadline = None if not expires else time.monotonic() + expires
        with self._shelf.changed:
            self._shelf.data[key] = (value, deadline)
            self._shelf.changed.notify_all()

    def _delete(self, key: str) -> None:
        with self._shelf.changed:
            self._shelf.data.pop(key, None)

    def _wait_change(self, task_id: str, timeout: float) -> None:
        with self._shelf.changed:
            self._shelf.changed.wait(timeout)
