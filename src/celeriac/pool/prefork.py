"""The prefork pool: child processes fed through pipes in batches, supervised by the loop.

The parent never pickles a task: ``apply`` encodes the message as the broker sent it into a
job record (``celeriac._accel.supervisor``), ``flush`` writes each child's batch, and
``on_readable`` settles deliveries from the children's STARTED and DONE records. Everything
runs in the consumer loop's thread (docs/internals/event-loop.md).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from celeriac._accel import supervisor as sup
from celeriac.errors import ConfigurationError, ProtocolError
from celeriac.pool._prefork_fail import time_limit_exceeded, worker_lost
from celeriac.pool._prefork_proc import Proc, spawn
from celeriac.worker.executor import DEFAULT_EXECUTOR, Executor

if TYPE_CHECKING:
    from collections.abc import Callable

    from celeriac.app import Celery
    from celeriac.worker.request import Request
    from celeriac.worker.state import WorkerState

__all__ = ["PreforkPool"]

logger = logging.getLogger("celeriac.pool.prefork")

QUEUE_DEPTH = 4
"""Jobs a child may hold at once without ``fair`` (the running one included): the next job
is already in its pipe when one ends, at the cost of waiting behind a long task."""
MAX_QUEUE_DEPTH = 64
QUEUE_SECONDS = 0.005
"""Without ``fair``, short tasks raise a child's depth from :data:`QUEUE_DEPTH` up to
:data:`MAX_QUEUE_DEPTH` so that about this much work (by the recent mean run time) is queued:
a child reports in batches (``celeriac.pool.child.FLUSH_AFTER``), and a shallow queue would
run dry before the parent hears that it should be refilled."""
_MEAN_WEIGHT = 0.05
ACK_HOLD = 0.01
"""Seconds a started task's early ack may wait for the tasks dispatched before it to start.

Children start tasks out of delivery order (each runs its own queue), and the ack batcher
can cover only an in-order run with one multiple-ack: acks released in dispatch order cost
the broker one frame per batch instead of one per task."""
MEMORY_CHECK_INTERVAL = 1.0
AUTOSCALE_IDLE = 5.0
"""Seconds a child must be idle before autoscale stops it."""
TERMINATE_GRACE = 1.0
_READ_SIZE = 1 << 16
START_METHODS = ("fork", "spawn")


class PreforkPool:
    """Tasks run in billiard child processes, ``concurrency`` at a time.

    Args:
        state: the worker's state (active requests, counters).
        concurrency: number of children (ignored with ``autoscale``).
        app: the application (children run its tasks; the parent stores lost/timed-out
            failures through its backend).
        max_tasks_per_child: a child exits after this many tasks; its replacement starts as
            soon as it has been sent its last job.
        max_memory_per_child: KiB of resident memory (current RSS, not peak) after which a
            child finishes its task and is replaced. When a fresh child already starts above
            it (a fork shares the parent's pages, so its RSS starts near the parent's), the
            pool logs one warning and, for such children, recycles only on growth beyond
            the RSS measured after their first task (connections and lazy imports done) of
            more than the limit or a quarter of that RSS, whichever is larger, so a limit set
            too low never recycles children after every task.
        time_limit, soft_time_limit: worker-wide defaults in seconds; the message's
            ``timelimit`` header, then the task's own limits, win.
        fair: give work only to idle children (``-O fair``).
        start_method: ``"fork"`` (default) or ``"spawn"`` (the app must then be picklable).
        executor: how tasks run and failures are recorded (children use their app's).
        autoscale: ``(max, min)`` children; grow while all are busy and work waits, stop
            children idle for :data:`AUTOSCALE_IDLE` seconds, never below ``min``.
    """

    def __init__(
        self,
        state: WorkerState,
        concurrency: int | None = None,
        app: Celery | None = None,
        max_tasks_per_child: int | None = None,
        max_memory_per_child: int | None = None,
        time_limit: float | None = None,
        soft_time_limit: float | None = None,
        fair: bool = False,
        start_method: str = "fork",
        autoscale: tuple[int, int] | None = None,
        wakeup: Callable[[], None] | None = None,
        hostname: str | None = None,
        executor: Executor | None = None,
        **_: Any,
    ) -> None:
        if app is None:
            from celeriac.app import current_app

            app = current_app()
        self.state = state
        self.app = app
        self.executor = executor or DEFAULT_EXECUTOR
        if autoscale:
            self.max_procs, self.min_procs = max(autoscale), min(autoscale)
            self._size = max(self.min_procs, 1)
        else:
            self.max_procs = self.min_procs = self._size = max(int(concurrency or 1), 1)
        self.limit = self.max_procs
        self.autoscale = bool(autoscale)
        self.max_tasks_per_child = max_tasks_per_child or None
        self.max_memory_per_child = max_memory_per_child or None
        self.time_limit = time_limit or None
        self.soft_time_limit = soft_time_limit or None
        self.fair = fair
        self.depth = 1 if fair else QUEUE_DEPTH
        """Jobs a child may hold now (adapts to the mean run time without ``fair``)."""
        self._mean_run: float | None = None
        self._ack_order: deque[int] = deque()  # job ids in dispatch order, not yet passed
        self._held: dict[int, Request | None] = {}  # started; None once acked (or acks late)
        self._held_since = 0.0  # when the oldest early ack still held was held; 0.0: none
        self._held_count = 0  # early acks held (entries of _held that are not None)
        if start_method not in START_METHODS:
            raise ConfigurationError(
                f"prefork start method must be one of {', '.join(START_METHODS)}, "
                f"not {start_method!r}"
            )
        self.start_method = start_method
        # the Pool step hands over the worker's bound wake method: the node name is on it
        self.hostname = hostname or f"celeriac@{socket.gethostname()}"
        self.max_redeliveries = int(app.conf.get("worker_lost_max_redeliveries", 3))
        self._procs: dict[int, Proc] = {}  # by result descriptor
        self._jobs: dict[int, Request] = {}
        self._owner: dict[int, Proc] = {}
        self._waiting: deque[Request] = deque()
        self._next_id = 1
        self._graveyard: list[int] = []  # dead children's result pipes, still in the loop's set
        self._unwatched: list[int] = []  # left out of the last filenos(): closed at the next
        self._memory_checked = 0.0
        self._memory_warned = False
        self._stopping = False
        self._terminating = False
        self._terminate_at = 0.0
        self.starts = 0
        """Children started so far (replacements included)."""

    # -- lifecycle
    def start(self) -> None:
        self._fill()

    def stop(self) -> None:
        """Warm: children finish the task they run, report it, and exit; jobs not started
        stay unacked (the broker takes them back when the channel closes)."""
        if self._stopping:
            return
        self._stopping = True
        self._waiting.clear()
        self._release_held()
        for proc in self._procs.values():
            if not proc.dead:
                proc.retiring = True
                proc.out += sup.encode_control(sup.STOP_NOW)
        self._wait_all()

    def terminate(self) -> None:
        """Cold: SIGTERM, then SIGKILL after a short grace; running tasks are not acked."""
        if not self._terminating:
            self._release_held()
            self._terminating = True
            self._terminate_at = time.monotonic()
            for proc in list(self._procs.values()):
                with contextlib.suppress(OSError):
                    os.kill(proc.pid, signal.SIGTERM)
        if self._stopping:
            return  # the thread in stop() escalates and reaps
        self._stopping = True
        self._waiting.clear()
        self._wait_all()

    def _wait_all(self) -> None:
        while self._procs:
            self.flush()
            if self._terminating and time.monotonic() - self._terminate_at > TERMINATE_GRACE:
                for proc in list(self._procs.values()):
                    with contextlib.suppress(OSError):
                        os.kill(proc.pid, signal.SIGKILL)
            fds = list(self._procs)
            with contextlib.suppress(OSError, ValueError):
                readable, _, _ = select.select(fds, [], [], 0.2)
                for fd in readable:
                    self.on_readable(fd)
        self._close_graveyard()

    # -- loop hooks
    def filenos(self) -> tuple[int, ...]:
        # A dead child's pipe is closed only at the call after the one that first left it out,
        # when the loop has unregistered it: epoll cannot unregister a closed descriptor, and
        # a stale registration would report it readable forever under a number that a new
        # pipe may reuse.
        unwatched, self._unwatched = self._unwatched, self._graveyard
        self._graveyard = []
        _close_all(unwatched)
        return tuple(self._procs)

    def apply(self, request: Request) -> None:
        self._waiting.append(request)
        self._dispatch()

    def flush(self) -> None:
        for proc in self._procs.values():
            if proc.out:
                proc.write()

    def on_readable(self, fd: int) -> None:
        proc = self._procs.get(fd)
        if proc is None:
            return
        eof = False
        chunks = []
        while True:  # one read unless the pipe held more than one read's worth
            try:
                data = os.read(fd, _READ_SIZE)
            except BlockingIOError:
                break
            except OSError:
                eof = True
                break
            if not data:
                eof = True
                break
            chunks.append(data)
            if len(data) < _READ_SIZE:
                break
        if chunks:
            try:
                records = proc.records.feed(chunks[0] if len(chunks) == 1 else b"".join(chunks))
            except ProtocolError as exc:
                logger.error("child %d sent a bad record (%s); replacing it", proc.pid, exc)
                with contextlib.suppress(OSError):
                    os.kill(proc.pid, signal.SIGKILL)
                records, eof = [], True
            for kind, job_id, value, rss, at in records:
                if kind == sup.DONE:
                    self._on_done(proc, job_id, value, rss, at * 1e-6)
                elif kind == sup.STARTED:
                    self._on_started(proc, job_id, at * 1e-6)
                else:
                    proc.start_rss = proc.rss = rss
        if eof:
            self._gone(proc)
        if self._ack_order:
            self._release_acks()
        if not self._stopping:
            self._dispatch()

    def tick(self) -> float | None:
        now = time.monotonic()
        wait: float | None = None
        for proc in list(self._procs.values()):
            job_id = proc.slots.running
            if not job_id or proc.dead:
                continue
            request = self._jobs.get(job_id)
            if request is None:
                continue
            soft, hard = self._limits(request)
            elapsed = now - proc.slots.started_at
            if hard is not None:
                if elapsed >= hard:
                    self._kill_timed_out(proc, job_id, request, hard)
                    continue
                wait = _sooner(wait, hard - elapsed)
            if soft is not None and not proc.soft_sent:
                if elapsed >= soft:
                    proc.soft_sent = True
                    logger.warning(
                        "soft time limit (%ss) exceeded for %s[%s]", soft, request.name, request.id
                    )
                    with contextlib.suppress(OSError):
                        os.kill(proc.pid, signal.SIGUSR1)
                else:
                    wait = _sooner(wait, soft - elapsed)
        if self.max_memory_per_child and now - self._memory_checked >= MEMORY_CHECK_INTERVAL:
            self._memory_checked = now
            self._check_memory()
        if self.autoscale and not self._stopping:
            self._autoscale(now)
        if self._ack_order:
            self._release_acks()
        if self._held_since:
            if now - self._held_since >= ACK_HOLD:
                self._release_held()
            else:
                wait = _sooner(wait, ACK_HOLD - (now - self._held_since))
        if not self._stopping:
            self._fill()
            self._dispatch()
        return wait

    # -- records
    def _on_started(self, proc: Proc, job_id: int, at: float) -> None:
        # ``at`` is the child's clock, the same monotonic clock as ours: time limits count
        # from when the task started, not from when the batch saying so was read
        if not proc.slots.started(job_id, at):
            return
        proc.soft_sent = False
        request = self._jobs.get(job_id)
        if request is None:
            return
        if request.task.acks_late:
            self._held[job_id] = None
        else:
            # early ack, as Celery does: the child has accepted it (sent in dispatch order,
            # see ACK_HOLD)
            self._held[job_id] = request
            self._held_count += 1
            if not self._held_since:
                self._held_since = time.monotonic()
        request.time_start = time.time()
        request.worker_pid = proc.pid
        self.state.task_accepted(request)

    def _on_done(self, proc: Proc, job_id: int, decision: int, rss: int, at: float) -> None:
        slots = proc.slots
        if slots.running == job_id and not self.fair:
            self._ran_for(at - slots.started_at)
        slots.done(job_id)
        if rss:
            proc.rss = rss
        if not slots.inflight:
            proc.idle_since = time.monotonic()
        self._owner.pop(job_id, None)
        request = self._jobs.pop(job_id, None)
        if request is not None and self._held.get(job_id) is not None:
            self.state.task_ready(request)  # acked when its turn comes, as if at its start
        elif request is not None:
            if decision == sup.REJECT:
                request.reject(requeue=False)
            elif decision == sup.REQUEUE:
                request.reject(requeue=True)
            else:
                request.acknowledge()
            self.state.task_ready(request)
        if self.max_memory_per_child and not proc.retiring:
            self._check_rss(proc, rss, first=proc.baseline is None)

    def _release_acks(self) -> None:
        """Early-ack the started tasks that every task dispatched before them has passed."""
        order, held, jobs = self._ack_order, self._held, self._jobs
        while order:
            job_id = order[0]
            if job_id in held:
                request = held.pop(job_id)
                if request is not None:
                    request.acknowledge()
                    self._held_count -= 1
            elif job_id in jobs:
                break  # not started yet
            order.popleft()
        if not self._held_count:
            self._held_since = 0.0

    def _release_held(self) -> None:
        """Send every held early ack now, in whatever order."""
        held = self._held
        for job_id, request in held.items():
            if request is not None:
                request.acknowledge()
                held[job_id] = None
        self._held_count = 0
        self._held_since = 0.0

    def _ran_for(self, seconds: float) -> None:
        mean = self._mean_run
        mean = seconds if mean is None else mean + (seconds - mean) * _MEAN_WEIGHT
        self._mean_run = mean
        if mean * MAX_QUEUE_DEPTH <= QUEUE_SECONDS:
            self.depth = MAX_QUEUE_DEPTH
        else:
            self.depth = max(QUEUE_DEPTH, int(QUEUE_SECONDS / mean))

    # -- children
    def _spawn(self) -> Proc:
        # every descriptor of the parent's that the child must not keep: a child holding a
        # dead sibling's result pipe would keep that pipe open after the parent closes it
        inherited = [*self._graveyard, *self._unwatched]
        for other in self._procs.values():
            inherited += (other.job_fd, other.result_fd)
        proc = spawn(
            self.app,
            self.hostname,
            self.start_method,
            self.max_tasks_per_child,
            inherited,
            watch_memory=bool(self.max_memory_per_child),
        )
        self._procs[proc.result_fd] = proc
        self.starts += 1
        return proc

    def _fill(self) -> None:
        if self._stopping:
            return
        active = sum(1 for p in self._procs.values() if not p.retiring and not p.dead)
        for _ in range(self._size - active):
            self._spawn()

    def _retire(self, proc: Proc, now: bool) -> None:
        """No more jobs for ``proc``; it exits after its queue (``now``: after its current job)."""
        if proc.retiring:
            return
        proc.retiring = True
        proc.out += sup.encode_control(sup.STOP_NOW if now else sup.STOP)
        self._fill()

    def _dispatch(self) -> None:
        waiting = self._waiting
        depth = self.depth
        while waiting and not self._stopping:
            best: Proc | None = None
            for proc in self._procs.values():
                if proc.retiring or proc.dead or proc.slots.inflight >= depth:
                    continue
                if best is None or proc.slots.inflight < best.slots.inflight:
                    best = proc
            if best is None:
                return
            request = waiting.popleft()
            job_id = self._next_id
            self._next_id += 1
            try:
                record = sup.encode_job(job_id, request.message)
            except ProtocolError as exc:
                logger.error(
                    "cannot hand %s[%s] to a child: %s; rejected", request.name, request.id, exc
                )
                request.reject(requeue=False)
                continue
            best.out += record
            best.slots.sent(job_id)
            self._jobs[job_id] = request
            self._owner[job_id] = best
            self._ack_order.append(job_id)
            if best.quota is not None:
                best.quota -= 1
                if best.quota <= 0:
                    self._retire(best, now=False)

    def _gone(self, proc: Proc) -> None:
        """``proc`` closed its pipe (exited or was killed): settle what it held, replace it."""
        proc.dead = True
        del self._procs[proc.result_fd]
        proc.close_job_pipe()
        self._graveyard.append(proc.result_fd)
        running = proc.slots.running
        unstarted = proc.slots.clear()
        for job_id in reversed(unstarted):
            self._owner.pop(job_id, None)
            request = self._jobs.pop(job_id, None)
            if request is not None and not self._stopping:
                self._waiting.appendleft(request)  # still unacked: another child runs it
        request = self._jobs.pop(running, None) if running else None
        self._owner.pop(running, None)
        if request is not None and not self._terminating:
            exitcode = proc.exitcode(timeout=1.0)
            worker_lost(request, exitcode, self.max_redeliveries, self.app, self.executor.fail)
            self.state.task_ready(request)
        elif not proc.retiring and not proc.timed_out and not self._stopping:
            logger.warning(
                "child %d exited unexpectedly (%s)", proc.pid, proc.exitcode(timeout=0.1)
            )
        else:
            proc.exitcode(timeout=0.0 if not self._stopping else 1.0)
        self._fill()

    def _kill_timed_out(self, proc: Proc, job_id: int, request: Request, limit: float) -> None:
        proc.timed_out = True
        with contextlib.suppress(OSError):
            os.kill(proc.pid, signal.SIGKILL)
        self._jobs.pop(job_id, None)
        self._owner.pop(job_id, None)
        time_limit_exceeded(request, limit, self.executor.fail)
        self.state.task_ready(request)
        self._gone(proc)

    def _limits(self, request: Request) -> tuple[float | None, float | None]:
        message, task = request.message, request.task
        soft = message.soft_time_limit
        if soft is None:
            soft = (
                task.soft_time_limit if task.soft_time_limit is not None else self.soft_time_limit
            )
        hard = message.time_limit
        if hard is None:
            hard = task.time_limit if task.time_limit is not None else self.time_limit
        return soft or None, hard or None

    # -- memory
    def _check_rss(self, proc: Proc, rss: int, first: bool) -> None:
        limit = self.max_memory_per_child
        assert limit is not None
        if first:
            if proc.start_rss < limit:
                proc.baseline = 0
            else:
                proc.baseline = rss
                if not self._memory_warned:
                    self._memory_warned = True
                    logger.warning(
                        "max_memory_per_child=%d KiB is below a fresh child's RSS (%d KiB); "
                        "recycling children only when they grow more than %d KiB or a quarter "
                        "beyond their RSS after their first task instead",
                        limit,
                        proc.start_rss,
                        limit,
                    )
                return
        baseline = proc.baseline
        if baseline is not None and rss > baseline + max(limit, baseline // 4):
            logger.info(
                "child %d uses %d KiB, over max_memory_per_child (%d KiB); replacing it",
                proc.pid,
                rss,
                limit,
            )
            self._retire(proc, now=True)

    def _check_memory(self) -> None:
        import psutil  # type: ignore[import-untyped]

        for proc in list(self._procs.values()):
            if not proc.busy or proc.retiring or proc.baseline is None:
                continue
            try:
                rss = int(psutil.Process(proc.pid).memory_info().rss // 1024)
            except psutil.Error:
                continue
            proc.rss = rss
            self._check_rss(proc, rss, first=False)

    # -- autoscale
    def _autoscale(self, now: float) -> None:
        live = [p for p in self._procs.values() if not p.retiring and not p.dead]
        if self._waiting and all(p.busy for p in live) and self._size < self.max_procs:
            self._size += 1
            logger.info("autoscale: growing to %d children", self._size)
            return
        if self._size > self.min_procs:
            for proc in live:
                if not proc.slots.inflight and now - proc.idle_since >= AUTOSCALE_IDLE:
                    self._size -= 1
                    logger.info("autoscale: shrinking to %d children", self._size)
                    self._retire(proc, now=False)
                    return

    def _close_graveyard(self) -> None:
        """Close every dead child's pipe now (the loop no longer watches the pool)."""
        graveyard = [*self._unwatched, *self._graveyard]
        self._unwatched, self._graveyard = [], []
        _close_all(graveyard)

    def info(self) -> dict[str, Any]:
        procs = [p for p in self._procs.values() if not p.dead]
        return {
            "implementation": "celeriac.pool.prefork:PreforkPool",
            "max-concurrency": self.limit,
            "processes": [p.pid for p in procs],
            "max-tasks-per-child": self.max_tasks_per_child,
            "put-guarded-by-semaphore": False,
            "timeouts": [self.soft_time_limit or 0, self.time_limit or 0],
            "writes": {"inqueues": {"total": len(procs), "active": sum(p.busy for p in procs)}},
            "children": [
                {
                    "pid": p.pid,
                    "tasks-done": p.slots.tasks_done,
                    "rss-kib": p.rss,
                    "busy": p.busy,
                }
                for p in procs
            ],
        }


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def _sooner(current: float | None, value: float) -> float:
    value = max(value, 0.0)
    return value if current is None or value < current else current
