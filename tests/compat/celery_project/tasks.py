"""The project's tasks: one of each kind a Celery project uses (found by autodiscovery)."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from celery import Task
from celery.exceptions import Ignore, Reject, SoftTimeLimitExceeded
from celery.utils.log import get_task_logger

from . import ledger
from .celery import app


class ProjectError(Exception):
    """A task's own exception, rebuilt on the client from the stored result."""


class Unpicklable(Exception):
    """An exception that cannot be pickled (it holds a lock) nor rebuilt from its args."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code
        self.lock = threading.Lock()


class Audited(Task):  # type: ignore[misc]
    """A custom base class: every hook writes to the ledger."""

    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        ledger.count("hooks", task_id, field="before_start")

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        ledger.count("hooks", task_id, field=f"on_success:{retval}")

    def on_failure(self, exc: Any, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        ledger.count("hooks", task_id, field=f"on_failure:{type(exc).__name__}")

    def on_retry(self, exc: Any, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        ledger.count("hooks", task_id, field=f"on_retry:{type(exc).__name__}")

    def after_return(
        self, status: str, retval: Any, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        ledger.count("hooks", task_id, field=f"after_return:{status}")


@app.task(name="cp.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="cp.mul")
def mul(x: int, y: int) -> int:
    return x * y


@app.task(name="cp.tsum")
def tsum(values: list[int]) -> int:
    return sum(values)


@app.task(name="cp.whoami", bind=True)
def whoami(self: Task, *args: Any, **kwargs: Any) -> dict[str, Any]:
    r = self.request
    return {
        "id": r.id,
        "task": r.task,
        "retries": r.retries,
        "hostname": r.hostname,
        "is_eager": r.is_eager,
        "routing_key": (r.delivery_info or {}).get("routing_key"),
        "args": list(r.args),
        "kwargs": dict(r.kwargs),
        "root_id": r.root_id,
        "name": self.name,
    }


@app.task(name="cp.routed", bind=True)
def routed(self: Task) -> str:
    return str((self.request.delivery_info or {}).get("routing_key"))


@app.task(name="cp.excluded")
def excluded() -> str:
    return "should not run"


@app.task(name="cp.retry_countdown", bind=True, max_retries=3, default_retry_delay=5)
def retry_countdown(self: Task, tag: str) -> int:
    ledger.count("runs", tag)
    if self.request.retries < 2:
        raise self.retry(countdown=0.2)
    return int(self.request.retries)


@app.task(name="cp.retry_exhausted", bind=True, max_retries=1)
def retry_exhausted(self: Task) -> None:
    raise self.retry(exc=ProjectError("gave up"), countdown=0.1)


@app.task(
    name="cp.autoretry",
    bind=True,
    autoretry_for=(KeyError,),
    retry_backoff=0.1,
    retry_backoff_max=0.5,
    retry_jitter=False,
    max_retries=5,
)
def autoretry(self: Task, tag: str) -> int:
    ledger.count("runs", tag)
    if self.request.retries < 2:
        raise KeyError(tag)
    return int(self.request.retries)


@app.task(name="cp.reject_drop", bind=True, acks_late=True)
def reject_drop(self: Task, tag: str) -> None:
    ledger.count("runs", tag)
    raise Reject("not wanted", requeue=False)


@app.task(name="cp.reject_requeue", bind=True, acks_late=True)
def reject_requeue(self: Task, tag: str) -> str:
    if ledger.count("runs", tag) == 1:
        raise Reject("try again", requeue=True)
    return "second time"


@app.task(name="cp.ignore", bind=True)
def ignore(self: Task, tag: str) -> None:
    ledger.count("runs", tag)
    raise Ignore()


@app.task(name="cp.replace", bind=True)
def replace(self: Task, x: int) -> Any:
    raise self.replace(add.s(x, 100))


@app.task(name="cp.when")
def when(tag: str) -> float:
    now = time.time()
    ledger.record("when", tag, now)
    return now


@app.task(name="cp.soft_limit", soft_time_limit=0.5)
def soft_limit() -> str:
    try:
        time.sleep(10)
    except SoftTimeLimitExceeded:
        return "soft limit caught"
    return "not interrupted"


@app.task(name="cp.hard_limit", time_limit=0.5)
def hard_limit() -> str:
    time.sleep(10)
    return "not killed"


@app.task(name="cp.no_result", ignore_result=True)
def no_result(tag: str) -> str:
    ledger.count("runs", tag)
    return "nobody reads this"


@app.task(name="cp.audited_ok", base=Audited)
def audited_ok(x: int) -> int:
    return x * 2


@app.task(name="cp.audited_fail", base=Audited)
def audited_fail() -> None:
    raise ProjectError("audited failure", 7)


@app.task(name="cp.audited_retry", base=Audited, bind=True, max_retries=1)
def audited_retry(self: Task) -> str:
    if self.request.retries == 0:
        raise self.retry(exc=ProjectError("once more"), countdown=0.1)
    return "retried"


@app.task(name="cp.fail")
def fail(message: str, code: int) -> None:
    raise ProjectError(message, code)


@app.task(name="cp.unpicklable")
def unpicklable() -> None:
    raise Unpicklable("cannot pickle me", 3)


@app.task(name="cp.late", acks_late=True)
def late(tag: str) -> int:
    return ledger.count("runs", tag)


@app.task(name="cp.pid")
def pid() -> int:
    return os.getpid()


@app.task(name="cp.ledger_hit")
def ledger_hit(run: str, n: int) -> None:
    pipe = ledger.client().pipeline(transaction=False)
    pipe.hincrby(ledger.key("hits", run), str(n), 1)
    pipe.hincrby(ledger.key("by_worker", run), os.environ.get("CP_WORKER", "?"), 1)
    pipe.execute()


@app.task(name="cp.die")
def die(tag: str) -> None:
    ledger.count("runs", tag)
    os._exit(1)


@app.task(name="cp.die_once", acks_late=True, reject_on_worker_lost=True)
def die_once(tag: str) -> str:
    if ledger.count("runs", tag) == 1:
        os._exit(1)
    return "survived"


logger = get_task_logger(__name__)


@app.task(name="cp.log_line")
def log_line(tag: str) -> None:
    logger.warning("logged %s", tag)
    print(f"printed {tag}")


@app.task(name="cp.record")
def record(value: Any, tag: str) -> None:
    ledger.record("recorded", tag, value)


@app.task(name="cp.errback")
def errback(task_id: str, tag: str) -> None:
    ledger.record("recorded", tag, f"errback for {task_id}")
