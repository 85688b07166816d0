"""Result backends: Celery's meta format (§3.2) over a key-value store, and the no-op backend."""

from __future__ import annotations

import logging
import time
import traceback as tb_module
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from celeriac import serialization, states
from celeriac.backends.exceptions import exception_from_dict, exception_to_dict
from celeriac.errors import ConfigurationError, TimeoutError

if TYPE_CHECKING:
    from celeriac.app import Celery

__all__ = ["Backend", "DisabledBackend", "KeyValueBackend"]

logger = logging.getLogger("celeriac.backends")

TASK_KEY_PREFIX = "celery-task-meta-"


class Backend:
    """Stores and reads task states in Celery's format; subclasses provide the storage."""

    supports_native_join = False

    def __init__(self, app: Celery, url: str | None = None) -> None:
        self.app = app
        self.url = url
        conf = app.conf
        self.serializer: str = conf.result_serializer
        accept = conf.result_accept_content or conf.accept_content
        self.accept = serialization.accept_content(accept)
        self.expires: float | None = _seconds(conf.result_expires)
        self.content_type, self.content_encoding, _ = serialization.dumps(None, self.serializer)
        self.extended: bool = bool(conf.result_extended)
        self.persistent: bool = bool(conf.result_persistent)

    # -- encoding
    def encode(self, meta: Mapping[str, Any]) -> bytes:
        return serialization.dumps(meta, self.serializer)[2]

    def decode(self, payload: bytes) -> Any:
        return serialization.loads(
            payload, self.content_type, self.content_encoding, accept=self.accept
        )

    def _is_serializable(self, value: Any) -> bool:
        try:
            serialization.dumps(value, self.serializer)
        except Exception:
            return False
        return True

    def prepare_exception(self, exc: BaseException) -> Any:
        if self.serializer == "pickle":
            return exc
        return exception_to_dict(exc, self._is_serializable)

    def exception_to_python(self, value: Any) -> BaseException:
        if isinstance(value, BaseException):
            return value
        return exception_from_dict(value)

    def meta_for(
        self,
        task_id: str,
        state: str,
        result: Any,
        traceback: str | None = None,
        request: Any = None,
        children: list[Any] | None = None,
    ) -> dict[str, Any]:
        """The dict Celery stores, keys in Celery's order (``task_id`` last)."""
        if state in states.EXCEPTION_STATES and isinstance(result, BaseException):
            result = self.prepare_exception(result)
        meta: dict[str, Any] = {
            "status": state,
            "result": result,
            "traceback": traceback,
            # Celery writes null for a revoked task's children and a list otherwise
            "children": (
                None if state == states.REVOKED else children if children is not None else []
            ),
            "date_done": (
                datetime.now(timezone.utc).isoformat() if state in states.READY_STATES else None
            ),
        }
        if request is not None:
            group = getattr(request, "group", None)
            if group:
                meta["group_id"] = group
            parent = getattr(request, "parent_id", None)
            if parent:
                meta["parent_id"] = parent
            if self.extended:
                delivery_info = getattr(request, "delivery_info", None) or {}
                meta.update(
                    name=getattr(request, "task", None),
                    args=getattr(request, "args", None),
                    kwargs=getattr(request, "kwargs", None),
                    worker=getattr(request, "hostname", None),
                    retries=getattr(request, "retries", 0),
                    queue=delivery_info.get("routing_key"),
                )
        meta["task_id"] = task_id
        return meta

    # -- writing
    def store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: str | None = None,
        request: Any = None,
        children: list[Any] | None = None,
    ) -> dict[str, Any]:
        meta = self.meta_for(task_id, state, result, traceback, request, children)
        self._store(task_id, meta, state)
        return meta

    def _store(self, task_id: str, meta: dict[str, Any], state: str) -> None:
        raise NotImplementedError

    def mark_as_started(self, task_id: str, request: Any = None, **meta: Any) -> dict[str, Any]:
        return self.store_result(task_id, meta, states.STARTED, request=request)

    def mark_as_done(
        self, task_id: str, result: Any, request: Any = None, children: list[Any] | None = None
    ) -> dict[str, Any]:
        return self.store_result(task_id, result, states.SUCCESS, None, request, children)

    def mark_as_failure(
        self,
        task_id: str,
        exc: BaseException,
        traceback: str | None = None,
        request: Any = None,
    ) -> dict[str, Any]:
        if traceback is None and exc.__traceback__ is not None:
            traceback = "".join(tb_module.format_exception(type(exc), exc, exc.__traceback__))
        return self.store_result(task_id, exc, states.FAILURE, traceback, request)

    def mark_as_retry(
        self,
        task_id: str,
        exc: BaseException,
        traceback: str | None = None,
        request: Any = None,
        children: list[Any] | None = None,
    ) -> dict[str, Any]:
        return self.store_result(task_id, exc, states.RETRY, traceback, request, children)

    def mark_as_revoked(
        self, task_id: str, reason: str = "revoked", request: Any = None
    ) -> dict[str, Any]:
        from celeriac.errors import TaskRevokedError

        return self.store_result(
            task_id, TaskRevokedError(reason), states.REVOKED, None, request, children=None
        )

    def on_task_call(self, task_id: str) -> None:
        """Called by the client before it publishes a task (the RPC backend declares its
        reply queue here, so the worker's reply has somewhere to go)."""

    # -- reading
    def get_task_meta(self, task_id: str) -> dict[str, Any]:
        raise NotImplementedError

    def wait_for(
        self, task_id: str, timeout: float | None = None, interval: float = 0.05
    ) -> dict[str, Any]:
        """Wait until the task is ready; poll every ``interval`` unless the store notifies."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            meta = self.get_task_meta(task_id)
            if meta["status"] in states.READY_STATES:
                return meta
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"timed out after {timeout}s waiting for task {task_id}")
            self._wait_change(
                task_id,
                interval
                if deadline is None
                else min(interval, max(0.0, deadline - time.monotonic())),
            )

    def _wait_change(self, task_id: str, timeout: float) -> None:
        time.sleep(timeout)

    def forget(self, task_id: str) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Release connections (nothing by default)."""


class KeyValueBackend(Backend):
    """A backend over get/set/delete of bytes, with Celery's key names."""

    key_prefix = TASK_KEY_PREFIX

    def get_key_for_task(self, task_id: str) -> str:
        return f"{self.key_prefix}{task_id}"

    def _get(self, key: str) -> bytes | None:
        raise NotImplementedError

    def _set(self, key: str, value: bytes, expires: float | None) -> None:
        raise NotImplementedError

    def _delete(self, key: str) -> None:
        raise NotImplementedError

    def _store(self, task_id: str, meta: dict[str, Any], state: str) -> None:
        key = self.get_key_for_task(task_id)
        # Celery never overwrites a stored SUCCESS (a redelivered duplicate must not undo it)
        current = self._get(key)
        if current is not None:
            try:
                if self.decode(current).get("status") == states.SUCCESS:
                    return
            except Exception:  # a corrupt old value is simply replaced
                logger.warning("replacing undecodable result for task %s", task_id)
        self._set(key, self.encode(meta), self.expires)

    def get_task_meta(self, task_id: str) -> dict[str, Any]:
        payload = self._get(self.get_key_for_task(task_id))
        if payload is None:
            return {
                "status": states.PENDING,
                "result": None,
                "traceback": None,
                "children": [],
                "date_done": None,
                "task_id": task_id,
            }
        meta = self.decode(payload)
        if not isinstance(meta, dict):
            raise ConfigurationError(f"result for task {task_id} is not a meta dict: {meta!r}")
        return meta

    def forget(self, task_id: str) -> None:
        self._delete(self.get_key_for_task(task_id))


class DisabledBackend(Backend):
    """What the app uses when ``result_backend`` is not set: storing is a no-op."""

    def _store(self, task_id: str, meta: dict[str, Any], state: str) -> None:
        return None

    def get_task_meta(self, task_id: str) -> dict[str, Any]:
        raise ConfigurationError(
            "no result backend is configured: set result_backend (or --result-backend) "
            "to read task results"
        )

    def forget(self, task_id: str) -> None:
        return None


def _seconds(value: Any) -> float | None:
    if value is None:
        return None
    if hasattr(value, "total_seconds"):
        return float(value.total_seconds())
    return float(value) or None
