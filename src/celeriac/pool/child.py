"""The prefork pool's child process: read job records from a pipe, run them, report back.

The child runs each task exactly as the solo pool does (its app's executor), so results,
retries and callbacks are stored and sent by the child itself. Its ack or reject only records
the decision, which goes back to the parent in the DONE record: the parent owns the broker
channel and settles the delivery.

A job's STARTED record is written, with the previous job's DONE, before the task runs, so
the parent always knows which job a child that dies was running.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import select
import signal
import sys
import threading
import time
from collections import deque
from types import FrameType
from typing import TYPE_CHECKING, Any

from celeriac import serialization
from celeriac._accel import message as message_impl
from celeriac._accel import supervisor as sup
from celeriac.errors import ConfigurationError, SoftTimeLimitExceeded
from celeriac.worker.consumer.tasks import _body_loader
from celeriac.worker.request import Request
from celeriac.worker.state import WorkerState

if TYPE_CHECKING:
    from celeriac.app import Celery

__all__ = ["app_reference", "child_main", "current_rss_kib", "spawned_child_main"]

logger = logging.getLogger("celeriac.pool.prefork")

RSS_INTERVAL = 1.0
"""Seconds between RSS measurements without ``max_memory_per_child`` (for ``info()``)."""
_READ_SIZE = 1 << 16
_PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
_running = False
_soft_error: type[Exception] = SoftTimeLimitExceeded
_statm = (-1, 0)  # /proc/self/statm opened once, and by which process


def current_rss_kib() -> int:
    """This process's resident set size now (not its peak), in KiB."""
    global _statm
    try:
        fd, owner = _statm
        if owner != os.getpid():  # a forked child must not read its parent's file
            fd = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)
            _statm = (fd, os.getpid())
        return int(os.pread(fd, 128, 0).split()[1]) * _PAGE_KIB
    except (OSError, ValueError, IndexError):
        import psutil  # type: ignore[import-untyped]

        return int(psutil.Process().memory_info().rss // 1024)


def _soft_time_limit(signum: int, frame: FrameType | None) -> None:
    # only inside a task: between tasks the signal came too late and is ignored
    if _running:
        raise _soft_error()


def _forget_connections(app: Celery) -> None:
    """Drop the parent's broker and backend connections without closing them.

    They are the parent's sockets too: closing them here would close the parent's
    connection. The child opens its own on first use.
    """
    from celeriac.app import _ProducerLocal

    app._producer = _ProducerLocal()
    app._producers = []
    # another thread of the parent may have held it at the fork, and nobody here releases it
    app._producers_lock = threading.Lock()
    app._backend = None


class _Decision:
    """Records what the executor decided; the parent applies it to the delivery."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = sup.NO_DECISION

    def ack(self, tag: Any) -> None:
        self.value = sup.ACK

    def reject(self, tag: Any, requeue: bool) -> None:
        self.value = sup.REQUEUE if requeue else sup.REJECT


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            select.select([], [fd], [])


def child_main(
    app: Celery,
    job_in: Any,
    result_out: Any,
    inherited: list[int],
    hostname: str,
    watch_memory: bool = False,
) -> None:
    """Run jobs from ``job_in`` until told to stop or the parent goes away.

    ``job_in`` and ``result_out`` are descriptors (fork) or billiard connections (spawn),
    read and written raw either way. With ``watch_memory`` every DONE record carries the RSS
    measured after the job; otherwise at most one per :data:`RSS_INTERVAL` does (0 in the
    others).
    """
    global _running, _soft_error
    job_fd = job_in if isinstance(job_in, int) else job_in.fileno()
    result_fd = result_out if isinstance(result_out, int) else result_out.fileno()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, _soft_time_limit)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    for fd in inherited:
        with contextlib.suppress(OSError):
            os.close(fd)
    _forget_connections(app)
    os.set_blocking(job_fd, False)
    os.set_blocking(result_fd, True)
    load = _body_loader(serialization.accept_content(app.conf.accept_content))
    decode = message_impl.MessageDecoder(
        load, app.timezone, app.conf.worker_max_message_size
    ).decode
    tasks = app.tasks
    state = WorkerState()
    pid = os.getpid()
    executor = app.executor
    execute = executor.execute
    _soft_error = executor.soft_time_limit_error
    executor.process_init(app, hostname)
    monotonic = time.monotonic
    encode_completion = sup.encode_completion
    STARTED, DONE = sup.STARTED, sup.DONE
    now = monotonic()
    out = bytearray(encode_completion(sup.HELLO, 0, pid, current_rss_kib(), int(now * 1e6)))
    rss_at = now
    records = sup.JobDecoder()
    local: deque[Any] = deque()
    stop = stop_now = eof = False
    try:
        while not stop_now:
            if not local:
                if stop or eof:
                    break
                if out:
                    _write_all(result_fd, out)
                    out.clear()
                select.select([job_fd], [], [])
            # read what is there before every job: a STOP_NOW must not wait behind queued jobs
            while not eof:
                try:
                    data = os.read(job_fd, _READ_SIZE)
                except BlockingIOError:
                    break
                if not data:
                    eof = True
                    break
                for record in records.feed(data):
                    kind = record[0]
                    if kind == sup.JOB:
                        local.append(record)
                    elif kind == sup.STOP:
                        stop = True
                    else:
                        stop_now = True
            if stop_now or not local:
                continue
            _, job_id, properties, headers, body, info = local.popleft()
            out += encode_completion(STARTED, job_id, pid, 0, int(monotonic() * 1e6))
            _write_all(result_fd, out)
            out.clear()
            decision = _Decision()
            try:
                message = decode(headers, properties, body, info, job_id)
                task = tasks.get(message.name)
                if task is None:
                    logger.error("task %r is not registered in this child; rejected", message.name)
                    decision.value = sup.REJECT
                else:
                    request = Request(message, task, decision.ack, decision.reject, hostname)
                    _running = True
                    try:
                        execute(request, state)
                    finally:
                        _running = False
            except _soft_error:
                pass  # arrived as the task ended: its outcome is already recorded
            except Exception as exc:
                logger.exception("job %d could not be run: %r", job_id, exc)
                if decision.value == sup.NO_DECISION:
                    decision.value = sup.ACK
            now = monotonic()
            rss = 0
            if watch_memory or now - rss_at >= RSS_INTERVAL:
                rss, rss_at = current_rss_kib(), now
            out += encode_completion(DONE, job_id, decision.value, rss, int(now * 1e6))
        if out:
            _write_all(result_fd, out)
    finally:
        with contextlib.suppress(Exception):
            executor.process_exit(app, hostname, 0)
        with contextlib.suppress(Exception):
            app.close()


def app_reference(app: Celery) -> str:
    """``module:attribute`` where ``app`` lives, so a spawned child can import the same app.

    Raises:
        ConfigurationError: the app is not a module-level attribute of an importable module.
    """
    for name, module in list(sys.modules.items()):
        if name in ("__main__", "__mp_main__") or module is None:
            continue
        for attr, value in list(getattr(module, "__dict__", {}).items()):
            if value is app and not attr.startswith("_"):
                return f"{name}:{attr}"
    raise ConfigurationError(
        f"cannot start prefork children with start method 'spawn': app {app.main!r} is not "
        "a module-level name in an importable module (spawned children import it again)"
    )


def spawned_child_main(app_ref: str, *args: Any, **kwargs: Any) -> None:
    """:func:`child_main` for a spawned child: import the app named by ``app_ref`` first."""
    module_name, _, attr = app_ref.partition(":")
    app = getattr(importlib.import_module(module_name), attr)
    child_main(app, *args, **kwargs)
