"""celeriac: a Celery-compatible task-queue worker runtime with a compiled hot path."""

from __future__ import annotations

from celeriac.app import App, Celery, current_app, shared_task
from celeriac.canvas import Signature, chain, group, signature
from celeriac.errors import (
    Ignore,
    MaxRetriesExceededError,
    NotRegistered,
    Reject,
    Retry,
    SoftTimeLimitExceeded,
    TimeLimitExceeded,
)
from celeriac.result import AsyncResult
from celeriac.task import Task

__version__ = "0.1.0"

__all__ = [
    "App",
    "AsyncResult",
    "Celery",
    "Ignore",
    "MaxRetriesExceededError",
    "NotRegistered",
    "Reject",
    "Retry",
    "Signature",
    "SoftTimeLimitExceeded",
    "Task",
    "TimeLimitExceeded",
    "__version__",
    "chain",
    "current_app",
    "group",
    "shared_task",
    "signature",
]
