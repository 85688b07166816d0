"""A task request in the worker: the decoded message, its task, and how to ack it."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from celeriac.context import Context

if TYPE_CHECKING:
    from celeriac._speedups_py.message import TaskMessage
    from celeriac.task import Task

__all__ = ["Request"]

_new_context = object.__new__


class Request:
    """One delivery being handled; ack and reject happen at most once between them."""

    __slots__ = (
        "_ack",
        "_reject",
        "acknowledged",
        "hostname",
        "id",
        "message",
        "name",
        "task",
        "time_start",
        "worker_pid",
    )

    def __init__(
        self,
        message: TaskMessage,
        task: Task,
        ack: Callable[[Any], None],
        reject: Callable[[Any, bool], None],
        hostname: str,
    ) -> None:
        self.message = message
        self.task = task
        self.id: str = message.id
        self.name: str = message.name
        self._ack = ack
        self._reject = reject
        self.hostname = hostname
        self.acknowledged = False
        self.time_start: float | None = None
        self.worker_pid: int | None = None

    def acknowledge(self) -> None:
        if not self.acknowledged:
            self.acknowledged = True
            self._ack(self.message.delivery_tag)

    def reject(self, requeue: bool = False) -> None:
        if not self.acknowledged:
            self.acknowledged = True
            self._reject(self.message.delivery_tag, requeue)

    def context(self, args: list[Any], kwargs: dict[str, Any], embed: dict[str, Any]) -> Context:
        """The ``Task.request`` the task sees."""
        m = self.message
        get = embed.get
        # built as the instance dict directly: one dict per task, no keyword-argument copy
        ctx: Context = _new_context(Context)
        ctx.__dict__ = {
            "id": m.id,
            "task": m.name,
            "args": args,
            "kwargs": kwargs,
            "retries": m.retries,
            "eta": m.eta,
            "expires": m.expires,
            "is_eager": False,
            "headers": m.headers,
            "delivery_info": self.delivery_info,
            "reply_to": m.reply_to,
            "correlation_id": m.correlation_id,
            "hostname": self.hostname,
            "root_id": m.root_id,
            "parent_id": m.parent_id,
            "group": m.group,
            "group_index": m.group_index,
            "shadow": m.shadow,
            "origin": m.origin,
            "callbacks": get("callbacks"),
            "errbacks": get("errbacks"),
            "chain": get("chain"),
            "chord": get("chord"),
            "timelimit": (m.time_limit, m.soft_time_limit),
            "ignore_result": m.ignore_result,
            "called_directly": False,
            "stamps": m.stamps,
            "stamped_headers": m.stamped_headers,
            "replaced_task_nesting": m.replaced_task_nesting,
            "priority": m.priority,
            "argsrepr": m.argsrepr,
            "kwargsrepr": m.kwargsrepr,
        }
        return ctx

    @property
    def delivery_info(self) -> dict[str, Any]:
        info = self.message.delivery_info or {}
        return {
            "exchange": info.get("exchange"),
            "routing_key": info.get("routing_key"),
            "priority": self.message.priority,
            "redelivered": bool(info.get("redelivered", False)),
        }

    def on_accepted(self) -> None:
        self.time_start = time.time()
        self.worker_pid = os.getpid()

    def info(self, safe: bool = False) -> dict[str, Any]:
        """Celery's TASK_INFO dict (``inspect active``/``reserved``)."""
        m = self.message
        if safe or m.body is None:
            args: Any = m.argsrepr
            kwargs: Any = m.kwargsrepr
        else:
            try:
                args, kwargs, _ = m.decode_body()
            except Exception:
                args, kwargs = m.argsrepr, m.kwargsrepr
        return {
            "id": m.id,
            "name": m.name,
            "args": args,
            "kwargs": kwargs,
            "type": m.name,
            "hostname": self.hostname,
            "time_start": self.time_start,
            "acknowledged": self.acknowledged,
            "delivery_info": self.delivery_info,
            "worker_pid": self.worker_pid,
        }

    def __repr__(self) -> str:
        return f"<Request {self.name}[{self.id}]>"
