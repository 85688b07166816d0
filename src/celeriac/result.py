"""Task results: :class:`AsyncResult` (read from the backend) and :class:`EagerResult`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from celeriac import states

if TYPE_CHECKING:
    from celeriac.app import Celery
    from celeriac.backends.base import Backend

__all__ = ["AsyncResult", "EagerResult", "ResultBase"]


class ResultBase:
    """What every result offers."""

    id: str

    def get(self, timeout: float | None = None, propagate: bool = True, **_: Any) -> Any:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def successful(self) -> bool:
        raise NotImplementedError

    def as_tuple(self) -> Any:
        return ((self.id, None), None)


class AsyncResult(ResultBase):
    """The result of a task sent to a worker, read through the app's result backend."""

    def __init__(
        self,
        id: str,
        backend: Backend | None = None,
        app: Celery | None = None,
        task_name: str | None = None,
    ) -> None:
        if app is None:
            from celeriac.app import current_app

            app = current_app()
        self.app = app
        self.id = id
        self.task_id = id
        self.name = task_name
        self._backend = backend
        self._cache: dict[str, Any] | None = None

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            self._backend = self.app.backend
        return self._backend

    def _get_meta(self) -> dict[str, Any]:
        if self._cache is not None:
            return self._cache
        meta = self.backend.get_task_meta(self.id)
        if meta["status"] in states.READY_STATES:
            self._cache = meta
        return meta

    @property
    def state(self) -> str:
        return str(self._get_meta()["status"])

    status = state

    @property
    def result(self) -> Any:
        """The return value, or the exception instance when the task failed."""
        meta = self._get_meta()
        return self._value(meta)

    info = result

    @property
    def traceback(self) -> str | None:
        tb: str | None = self._get_meta().get("traceback")
        return tb

    @property
    def date_done(self) -> str | None:
        value: str | None = self._get_meta().get("date_done")
        return value

    @property
    def children(self) -> list[Any]:
        children: list[Any] = self._get_meta().get("children") or []
        return children

    def _value(self, meta: dict[str, Any]) -> Any:
        if meta["status"] in states.EXCEPTION_STATES:
            return self.backend.exception_to_python(meta["result"])
        return meta["result"]

    def ready(self) -> bool:
        return self.state in states.READY_STATES

    def successful(self) -> bool:
        return self.state == states.SUCCESS

    def failed(self) -> bool:
        return self.state == states.FAILURE

    def get(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.05,
        **_: Any,
    ) -> Any:
        """Wait for the task and return its value; re-raise its exception when it failed.

        Raises:
            celeriac.errors.TimeoutError: not ready within ``timeout`` seconds.
        """
        meta = self._cache or self.backend.wait_for(self.id, timeout=timeout, interval=interval)
        self._cache = meta
        value = self._value(meta)
        if propagate and meta["status"] in states.PROPAGATE_STATES:
            raise value
        return value

    wait = get

    def forget(self) -> None:
        self._cache = None
        self.backend.forget(self.id)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, AsyncResult):
            return other.id == self.id
        if isinstance(other, str):
            return other == self.id
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.id)

    def __str__(self) -> str:
        return self.id

    def __repr__(self) -> str:
        return f"<AsyncResult: {self.id}>"


class EagerResult(ResultBase):
    """The result of ``Task.apply``: already known, nothing to wait for."""

    def __init__(
        self,
        id: str,
        ret_value: Any,
        state: str,
        traceback: str | None = None,
        name: str | None = None,
    ) -> None:
        self.id = id
        self.task_id = id
        self._result = ret_value
        self._state = state
        self._traceback = traceback
        self.name = name

    @property
    def state(self) -> str:
        return self._state

    status = state

    @property
    def result(self) -> Any:
        return self._result

    info = result

    @property
    def traceback(self) -> str | None:
        return self._traceback

    def ready(self) -> bool:
        return True

    def successful(self) -> bool:
        return self._state == states.SUCCESS

    def failed(self) -> bool:
        return self._state == states.FAILURE

    def get(self, timeout: float | None = None, propagate: bool = True, **_: Any) -> Any:
        if propagate and self._state in states.PROPAGATE_STATES:
            raise self._result
        return self._result

    wait = get

    def forget(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"<EagerResult: {self.id}>"
