"""The apps a benchmark worker loads (``-A celeriac.bench.apps:celeriac_app`` or
``:celery_app``): the same task names on both, so one workload runs on either worker."""

from __future__ import annotations

import os
import time
from typing import Any

__all__ = ["BROKER", "MARK", "NOOP", "QUEUE", "celeriac_app", "register"]

BROKER = os.environ.get("CELERIAC_BENCH_BROKER", "amqp://guest:guest@127.0.0.1:5672//")
BACKEND = os.environ.get("CELERIAC_BENCH_BACKEND") or None
QUEUE = os.environ.get("CELERIAC_BENCH_QUEUE", "celeriac.bench")
NOOP = "celeriac.bench.noop"
MARK = "celeriac.bench.mark"
ECHO = "celeriac.bench.echo"


def noop(payload: Any = None) -> None:
    return None


def mark(path: str) -> None:
    """The last task of a run: says when the worker got to the end of the queue."""
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(repr(time.time()))


def echo(value: Any) -> Any:
    return value


def register(app: Any) -> None:
    conf = app.conf
    conf.task_default_queue = QUEUE
    conf.accept_content = ["json"]
    app.task(name=NOOP, ignore_result=True)(noop)
    app.task(name=MARK, ignore_result=True)(mark)
    app.task(name=ECHO)(echo)


def _celeriac_app() -> Any:
    from celeriac import Celery

    app = Celery("celeriac-bench", broker=BROKER, backend=BACKEND, set_as_current=False)
    register(app)
    return app


celeriac_app = _celeriac_app()


def __getattr__(name: str) -> Any:
    # the Celery app is built only when a Celery worker asks for it (celery is optional)
    if name == "celery_app":
        from celery import Celery

        app = Celery(
            "celeriac-bench", broker=BROKER.replace("amqp://", "pyamqp://", 1), backend=BACKEND
        )
        app.conf.broker_connection_retry_on_startup = True
        register(app)
        globals()["celery_app"] = app
        return app
    raise AttributeError(name)
