"""The request context a task sees as ``self.request``, and the stack of running tasks."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celeriac.task import Task

__all__ = ["Context", "current_task", "pop_task", "push_task"]


class Context:
    """Celery's ``Task.request``: every attribute exists, unset ones are ``None``/defaults."""

    id: str | None = None
    task: str | None = None
    args: Any = None
    kwargs: Any = None
    retries: int = 0
    eta: str | None = None
    expires: str | None = None
    is_eager: bool = False
    headers: dict[str, Any] | None = None
    delivery_info: dict[str, Any] | None = None
    reply_to: str | None = None
    correlation_id: str | None = None
    hostname: str | None = None
    root_id: str | None = None
    parent_id: str | None = None
    group: str | None = None
    group_index: int | None = None
    shadow: str | None = None
    origin: str | None = None
    callbacks: list[Any] | None = None
    errbacks: list[Any] | None = None
    chain: list[Any] | None = None
    chord: dict[str, Any] | None = None
    timelimit: tuple[float | None, float | None] | None = None
    ignore_result: bool = False
    called_directly: bool = True
    stamps: dict[str, Any] | None = None
    stamped_headers: list[str] | None = None
    replaced_task_nesting: int = 0
    properties: dict[str, Any] | None = None
    priority: int | None = None

    def __init__(self, **kwargs: Any) -> None:
        self.__dict__.update(kwargs)

    def update(self, **kwargs: Any) -> None:
        self.__dict__.update(kwargs)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __repr__(self) -> str:
        return f"<Context {self.__dict__!r}>"


class _TaskStack(threading.local):
    def __init__(self) -> None:
        self.stack: list[Task] = []


_stack = _TaskStack()


def push_task(task: Task) -> None:
    _stack.stack.append(task)


def pop_task() -> None:
    _stack.stack.pop()


def current_task() -> Task | None:
    """The task running in this thread, if any (used to fill ``parent_id`` and ``root_id``)."""
    stack = _stack.stack
    return stack[-1] if stack else None
