"""Run a worker inside the test process, shaped like ``celery.contrib.testing.worker``."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from celeriac.errors import CeleriacError

if TYPE_CHECKING:
    from celeriac.app import Celery
    from celeriac.worker.worker import WorkController

__all__ = ["start_worker"]


@contextmanager
def start_worker(
    app: Celery,
    pool: str = "solo",
    concurrency: int = 1,
    queues: Sequence[str] | None = None,
    hostname: str | None = None,
    shutdown_timeout: float = 10.0,
    startup_timeout: float = 10.0,
    **kwargs: Any,
) -> Iterator[WorkController]:
    """Start a worker in a background thread, yield it once it consumes, stop it on exit.

    Raises:
        CeleriacError: the worker did not start consuming in ``startup_timeout`` seconds, or
            did not stop in ``shutdown_timeout`` seconds.
    """
    worker = app.Worker(
        pool=pool,
        concurrency=concurrency,
        queues=queues,
        hostname=hostname or "celeriac-test@%h",
        **kwargs,
    )
    failure: list[BaseException] = []

    def run() -> None:
        try:
            worker.start()
        except BaseException as exc:  # reported to the test thread below
            failure.append(exc)

    thread = threading.Thread(target=run, name=f"celeriac-worker-{worker.hostname}", daemon=True)
    thread.start()
    consumer = worker.consumer
    while not consumer.ready.wait(0.01):
        if failure or not thread.is_alive():
            raise CeleriacError(f"test worker failed to start: {failure[:1]!r}") from (
                failure[0] if failure else None
            )
        startup_timeout -= 0.01
        if startup_timeout <= 0:
            worker.stop()
            raise CeleriacError("test worker did not start consuming in time")
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(shutdown_timeout)
        if thread.is_alive():
            raise CeleriacError(f"test worker did not stop within {shutdown_timeout}s")
        if failure:
            raise CeleriacError(f"test worker crashed: {failure[0]!r}") from failure[0]
