"""The apps a benchmark worker loads (``-A celeriac.bench.apps:celeriac_app`` or
``:celery_app``): the same task names on both, so one workload runs on either worker.

A worker process is configured through the environment: ``CELERIAC_BENCH_BROKER``,
``CELERIAC_BENCH_BACKEND``, ``CELERIAC_BENCH_QUEUE`` and ``CELERIAC_BENCH_ACKS_LATE=1``. The
client side of ``celeriac bench`` builds its apps with :func:`make_celeriac_app` and
:func:`make_celery_app` instead. What a task does comes with each message (``sleep`` gets its
milliseconds as an argument), so one worker runs every ``--task`` kind.
"""

from __future__ import annotations

import os
import time
from typing import Any

__all__ = [
    "BROKER",
    "CPU",
    "ECHO",
    "MARK",
    "NOOP",
    "QUEUE",
    "SLEEP",
    "celeriac_app",
    "make_celeriac_app",
    "make_celery_app",
    "register",
]

BROKER = os.environ.get("CELERIAC_BENCH_BROKER", "amqp://guest:guest@127.0.0.1:5672//")
BACKEND = os.environ.get("CELERIAC_BENCH_BACKEND") or None
QUEUE = os.environ.get("CELERIAC_BENCH_QUEUE", "celeriac.bench")
ACKS_LATE = os.environ.get("CELERIAC_BENCH_ACKS_LATE") == "1"
NOOP = "celeriac.bench.noop"
MARK = "celeriac.bench.mark"
ECHO = "celeriac.bench.echo"
SLEEP = "celeriac.bench.sleep"
CPU = "celeriac.bench.cpu"


def noop(payload: Any = None) -> None:
    return None


def mark(path: str) -> None:
    """The last task of a run: says when the worker got to the end of the queue."""
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(repr(time.time()))


def echo(value: Any = None) -> Any:
    return value


def sleep(ms: float, payload: Any = None) -> None:
    time.sleep(ms / 1000.0)


def cpu(us: float, payload: Any = None) -> int:
    """Keep the CPU busy for ``us`` microseconds (a loop, so it holds the GIL like real work)."""
    end = time.perf_counter() + us / 1_000_000.0
    spins = 0
    while time.perf_counter() < end:
        spins += 1
    return spins


def register(app: Any, queue: str = QUEUE, acks_late: bool = ACKS_LATE) -> None:
    """Register the bench tasks on a celeriac or Celery app.

    Whether a result is stored is said by each message (``ignore_result``): the drain phase
    sends its tasks without results, the round-trip phase with them.
    """
    conf = app.conf
    conf.task_default_queue = queue
    conf.accept_content = ["json"]
    conf.task_acks_late = acks_late
    conf.worker_enable_remote_control = False
    for name, fun in ((NOOP, noop), (ECHO, echo), (SLEEP, sleep), (CPU, cpu)):
        app.task(name=name)(fun)
    app.task(name=MARK, ignore_result=True)(mark)


def make_celeriac_app(
    broker: str = BROKER,
    backend: str | None = BACKEND,
    queue: str = QUEUE,
    acks_late: bool = ACKS_LATE,
    **settings: Any,
) -> Any:
    """A celeriac app with the bench tasks."""
    from celeriac import Celery

    app = Celery("celeriac-bench", broker=broker, backend=backend, set_as_current=False)
    app.conf.update(settings)
    register(app, queue, acks_late)
    return app


def make_celery_app(
    broker: str = BROKER,
    backend: str | None = BACKEND,
    queue: str = QUEUE,
    acks_late: bool = ACKS_LATE,
    **settings: Any,
) -> Any:
    """A Celery app with the bench tasks (needs the ``celery`` package).

    ``amqp://`` becomes ``pyamqp://``: kombu would otherwise pick librabbitmq when installed,
    and Celery users get py-amqp by default.
    """
    from celery import Celery

    app = Celery(
        "celeriac-bench",
        broker=broker.replace("amqp://", "pyamqp://", 1),
        backend=backend,
        set_as_current=False,
    )
    app.conf.broker_connection_retry_on_startup = True
    app.conf.update(settings)
    register(app, queue, acks_late)
    return app


celeriac_app = make_celeriac_app()


def __getattr__(name: str) -> Any:
    # the Celery app is built only when a Celery worker asks for it (celery is optional)
    if name == "celery_app":
        app = make_celery_app()
        globals()["celery_app"] = app
        return app
    raise AttributeError(name)
