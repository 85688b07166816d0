"""The threads pool (``-P threads``): N threads in the worker's process run the tasks.

Tasks run in the threads; their acks and rejects do not. The ack batcher belongs to the
consumer loop's thread, so a thread only records each decision on a completion queue and wakes
the loop (through the transport's ``wakeup``), and the loop applies them in :meth:`tick`, in
the order each task made them.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from celeriac.worker.executor import execute_request

if TYPE_CHECKING:
    from celeriac.worker.executor import Executor
    from celeriac.worker.request import Request
    from celeriac.worker.state import WorkerState

__all__ = ["ThreadsPool"]

logger = logging.getLogger("celeriac.pool.threads")

# (the consumer's ack or reject, its arguments)
_Decision = tuple[Callable[..., None], tuple[Any, ...]]


def _no_wakeup() -> None:
    return None


class ThreadsPool:
    """Run up to ``concurrency`` tasks at once, each in its own thread.

    Args:
        state: the worker's state (active and reserved requests, counters).
        concurrency: how many threads (default: the CPU count).
        app: the application (unused; every pool takes it).
        wakeup: called from a thread after it records a decision, to make the consumer
            loop come round and call :meth:`tick` (the transport's ``wakeup``).
        executor: how a request runs (default: celeriac's own tracer).
        **options: other pool options, ignored.
    """

    def __init__(
        self,
        state: WorkerState,
        concurrency: int | None = None,
        app: Any = None,
        wakeup: Callable[[], None] | None = None,
        executor: Executor | None = None,
        **options: Any,
    ) -> None:
        self.state = state
        self._execute = executor.execute if executor is not None else execute_request
        self.limit = concurrency or os.cpu_count() or 1
        self.app = app
        self.options = options
        self._wakeup = wakeup or _no_wakeup
        # Requests not started yet. Unbounded, so apply never blocks: the consumer's prefetch
        # (a multiple of the limit) is what bounds it.
        self._queue: deque[Request] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._busy = 0
        self._threads: list[threading.Thread] = []
        # Decisions recorded by the threads for the loop; _signalled says a wakeup is on its
        # way, so a thread wakes the loop once per batch rather than once per task.
        self._done_lock = threading.Lock()
        self._done: deque[_Decision] = deque()
        self._signalled = False

    def __repr__(self) -> str:
        return f"<ThreadsPool limit={self.limit} busy={self._busy} queued={len(self._queue)}>"

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        with self._cond:
            self._stopping = False
            if self._threads:
                return
            for i in range(self.limit):
                thread = threading.Thread(
                    target=self._run, name=f"celeriac-pool-thread-{i + 1}", daemon=True
                )
                self._threads.append(thread)
                thread.start()

    def stop(self) -> None:
        """Warm stop: take no new request, let the running ones finish, join the threads.

        Requests not started stay unacked: the broker redelivers them when the consumer's
        connection closes. The decisions of the finished ones wait for the next :meth:`tick`.
        """
        threads = self._halt()
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join()

    def terminate(self) -> None:
        """Stop without waiting; running tasks cannot be killed and finish in the background."""
        self._halt()

    def _halt(self) -> list[threading.Thread]:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            threads, self._threads = self._threads, []
        return threads

    # -- the consumer loop's side ----------------------------------------------------------

    def apply(self, request: Request) -> None:
        """Queue ``request`` for the next free thread; never blocks."""
        # Request calls these once at most, from the thread that runs it.
        request._ack = partial(self._record, request._ack)
        request._reject = partial(self._record, request._reject)
        with self._cond:
            self._queue.append(request)
            self._cond.notify()

    def filenos(self) -> tuple[int, ...]:
        """None: the threads wake the loop through the transport instead."""
        return ()

    def on_readable(self, fd: int) -> None:
        return None

    def flush(self) -> None:
        return None

    def tick(self) -> float | None:
        """Apply the acks and rejects the threads recorded, in the order they were made."""
        self.settle()
        return None

    def settle(self) -> int:
        """Apply the recorded decisions in this (the loop's) thread; return how many.

        Raises:
            Exception: what an ack or reject raised (a lost connection); that decision is
                dropped, as it would be inline, and the rest wait for the next call.
        """
        with self._done_lock:
            self._signalled = False
            if not self._done:
                return 0
            done, self._done = self._done, deque()
        count = 0
        try:
            while done:
                settle, args = done.popleft()
                count += 1
                settle(*args)
        finally:
            if done:
                with self._done_lock:
                    done.extend(self._done)
                    self._done = done
                    self._signalled = True
                self._wakeup()
        return count

    def info(self) -> dict[str, Any]:
        return {
            "implementation": "celeriac.pool.threads:ThreadsPool",
            "max-concurrency": self.limit,
            "processes": [os.getpid()],
            "max-tasks-per-child": None,
            "put-guarded-by-semaphore": False,
            "timeouts": [],
            "threads": len(self._threads),
            "busy": self._busy,
            "queued": len(self._queue),
        }

    # -- the threads' side -----------------------------------------------------------------

    def _record(self, settle: Callable[..., None], *args: Any) -> None:
        with self._done_lock:
            self._done.append((settle, args))
            if self._signalled:
                return
            self._signalled = True
        self._wakeup()

    def _run(self) -> None:
        cond, queue = self._cond, self._queue
        while True:
            with cond:
                while not queue and not self._stopping:
                    cond.wait()
                if self._stopping:
                    return
                request = queue.popleft()
                self._busy += 1
            try:
                self._execute(request, self.state)
            except Exception:
                # execute_request handles task errors; this is a bug, and the message stays
                # unacked until the connection closes.
                logger.exception("unexpected error running %r", request)
            finally:
                with cond:
                    self._busy -= 1
