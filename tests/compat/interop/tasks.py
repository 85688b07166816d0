"""Tasks defined once and registered on both a Celery app and a celeriac app."""

from __future__ import annotations

import os
from typing import Any

QUEUE = os.environ.get("INTEROP_QUEUE", "celeriac.interop")
BROKER = os.environ.get("INTEROP_BROKER", "pyamqp://guest:guest@127.0.0.1:5672//")
BACKEND = os.environ.get("INTEROP_BACKEND", "redis://127.0.0.1:6379/15")
REDIS = os.environ.get("INTEROP_REDIS", "redis://127.0.0.1:6379/15")


class InteropError(Exception):
    """Raised on purpose; both sides must rebuild it as this type."""


def echo(*args: Any, **kwargs: Any) -> list[Any]:
    return [list(args), kwargs]


def fail(message: str, code: int) -> None:
    raise InteropError(message, code)


def value_error() -> None:
    raise ValueError("boom", 42)


def retry_twice(self: Any, value: int) -> list[int]:
    if self.request.retries < 2:
        raise self.retry(countdown=0.2, max_retries=5)
    return [value, self.request.retries]


def record(key: str, item: str) -> None:
    import redis

    redis.Redis.from_url(REDIS).sadd(key, item)


def register(app: Any) -> dict[str, Any]:
    """Register every task on ``app`` under the same names, whatever the app's kind."""
    conf = app.conf
    conf.task_default_queue = QUEUE
    conf.accept_content = ["json"]
    conf.result_expires = 600
    return {
        "echo": app.task(name="interop.echo")(echo),
        "fail": app.task(name="interop.fail")(fail),
        "value_error": app.task(name="interop.value_error")(value_error),
        "retry_twice": app.task(name="interop.retry_twice", bind=True)(retry_twice),
        "record": app.task(name="interop.record", ignore_result=True)(record),
    }
