"""Removing what a run created (queues, exchanges, result keys), also after Ctrl-C."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterable, Iterator
from types import FrameType

from celeriac.bench.apps import make_celeriac_app

__all__ = ["deferred_sigint", "delete_queues", "delete_results"]


@contextlib.contextmanager
def deferred_sigint() -> Iterator[None]:
    """Hold SIGINT while the block runs (starting a worker, cleaning up), then raise the
    ``KeyboardInterrupt`` it would have raised, once the block is done."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    previous = signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def delete_queues(broker: str, queues: Iterable[str], exchanges: Iterable[str]) -> list[str]:
    """Delete queues and exchanges on a connection of its own (the run's may be mid-frame
    after an interruption); return what could not be done, as sentences."""
    from celeriac.transports.registry import transport_for_url

    problems: list[str] = []
    transport = transport_for_url(broker, heartbeat=0)
    try:
        transport.connect()
    except Exception as exc:  # report, never hide the measurements
        return [f"cannot connect to delete the bench queues: {exc}"]
    try:
        for kind, names in (("queue", queues), ("exchange", exchanges)):
            for name in names:
                try:
                    if kind == "queue":
                        transport.delete_queue(name)
                    else:
                        transport.delete_exchange(name)
                except Exception as exc:  # the next one may still go
                    problems.append(f"could not delete {kind} {name}: {exc}")
                    with contextlib.suppress(Exception):
                        transport.connect()  # a channel error closes only the channel
    finally:
        with contextlib.suppress(Exception):
            transport.close()
    return problems


def delete_results(broker: str, backend: str, task_ids: list[str]) -> list[str]:
    """Delete the stored results of ``task_ids`` (one ``DEL`` per 500 keys on Redis)."""
    if not task_ids or backend.startswith(("rpc://", "memory://")):
        return []  # rpc results live in the client's reply queue; memory in this process
    app = make_celeriac_app(broker, backend)
    try:
        store = app.backend
        client = getattr(store, "client", None)
        if client is not None and hasattr(client, "delete"):
            keys = [store.get_key_for_task(task_id) for task_id in task_ids]
            for i in range(0, len(keys), 500):
                client.delete(*keys[i : i + 500])
        else:
            for task_id in task_ids:
                store.forget(task_id)
    except Exception as exc:  # report, never hide the measurements
        return [f"could not delete the stored results: {exc}"]
    finally:
        app.close()
    return []
