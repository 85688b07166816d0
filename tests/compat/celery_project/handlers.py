"""Signal receivers that write to the ledger (imported through the app's ``include``)."""

from __future__ import annotations

import os
from typing import Any

from celery import signals

from . import ledger


@signals.worker_init.connect
def on_worker_init(sender: Any = None, **_: Any) -> None:
    ledger.count("worker_init")


@signals.worker_ready.connect
def on_worker_ready(sender: Any = None, **_: Any) -> None:
    ledger.record("worker_ready", os.environ.get("CP_WORKER", "pid"), os.getpid())


@signals.worker_shutdown.connect
def on_worker_shutdown(sender: Any = None, **_: Any) -> None:
    ledger.count("worker_shutdown")


@signals.worker_process_init.connect
def on_process_init(sender: Any = None, **_: Any) -> None:
    ledger.record("process_init", os.getpid(), sender)


@signals.worker_process_shutdown.connect
def on_process_shutdown(sender: Any = None, pid: Any = None, **_: Any) -> None:
    ledger.record("process_shutdown", pid, sender)


@signals.task_received.connect
def on_received(request: Any = None, **_: Any) -> None:
    ledger.count("signals", request.id, field=f"received:{request.name}")


@signals.task_prerun.connect
def on_prerun(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    ledger.count("signals", task_id, field="prerun")


@signals.task_postrun.connect
def on_postrun(task_id: str | None = None, state: str | None = None, **_: Any) -> None:
    ledger.count("signals", task_id, field=f"postrun:{state}")


@signals.task_success.connect
def on_success(sender: Any = None, result: Any = None, **_: Any) -> None:
    ledger.count("signals", sender.request.id, field="success")


@signals.task_failure.connect
def on_failure(task_id: str | None = None, exception: Any = None, **_: Any) -> None:
    ledger.count("signals", task_id, field=f"failure:{type(exception).__name__}")


@signals.task_retry.connect
def on_retry(request: Any = None, **_: Any) -> None:
    ledger.count("signals", request.id, field="retry")


@signals.task_revoked.connect
def on_revoked(request: Any = None, expired: Any = None, **_: Any) -> None:
    ledger.count("signals", request.id, field=f"revoked:{bool(expired)}")
