"""The prefork parent's handle on one child process: its pipes, buffers and bookkeeping."""

from __future__ import annotations

import contextlib
import os
import time
from typing import TYPE_CHECKING, Any

from celeriac._accel import supervisor as sup
from celeriac.errors import ConfigurationError
from celeriac.pool.child import app_reference, child_main, spawned_child_main

if TYPE_CHECKING:
    from celeriac.app import Celery

__all__ = ["Proc", "spawn"]


class Proc:
    """One child as the parent sees it.

    ``job_fd`` (parent writes jobs) and ``result_fd`` (parent reads records) are non-blocking.
    """

    __slots__ = (
        "baseline",
        "dead",
        "idle_since",
        "job_fd",
        "out",
        "pid",
        "process",
        "quota",
        "records",
        "result_fd",
        "retiring",
        "rss",
        "slots",
        "soft_sent",
        "start_rss",
        "timed_out",
    )

    def __init__(self, process: Any, job_fd: int, result_fd: int, quota: int | None) -> None:
        self.process = process
        self.pid: int = process.pid
        self.job_fd = job_fd
        self.result_fd = result_fd
        self.out = bytearray()
        self.slots = sup.ChildSlots()
        self.records = sup.CompletionDecoder()
        self.quota = quota
        self.retiring = False
        self.dead = False
        self.timed_out = False
        self.soft_sent = False
        self.start_rss = 0
        self.rss = 0
        self.baseline: int | None = None
        self.idle_since = time.monotonic()

    @property
    def busy(self) -> bool:
        return bool(self.slots.running)

    def write(self) -> None:
        """Write what the buffer holds without blocking; keep the rest for the next call."""
        out = self.out
        try:
            written = os.write(self.job_fd, out)
        except BlockingIOError:
            return
        except OSError:  # the child is gone; its EOF on the result pipe says so
            out.clear()
            return
        del out[:written]

    def close_job_pipe(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.job_fd)

    def exitcode(self, timeout: float) -> int | None:
        """The child's exit code (negative: killed by that signal), waiting up to ``timeout``."""
        with contextlib.suppress(Exception):
            self.process.join(timeout)
        code: int | None = self.process.exitcode
        return code


def spawn(
    app: Celery,
    hostname: str,
    start_method: str,
    quota: int | None,
    inherited: list[int],
    watch_memory: bool = False,
) -> Proc:
    """Start one child; ``inherited`` are the parent's descriptors a forked child must close.

    ``watch_memory``: the child reports its RSS after every job (``max_memory_per_child``).
    """
    import billiard

    ctx = billiard.get_context(start_method)
    if start_method == "fork":
        job_r, job_w = os.pipe()
        res_r, res_w = os.pipe()
        process = ctx.Process(
            target=child_main,
            args=(app, job_r, res_w, [*inherited, job_w, res_r], hostname, watch_memory),
            daemon=True,
        )
        process.start()
        os.close(job_r)
        os.close(res_w)
    else:
        # connections are what billiard knows how to hand to a spawned child
        job_rc, job_wc = ctx.Pipe(duplex=False)
        res_rc, res_wc = ctx.Pipe(duplex=False)
        process = ctx.Process(
            target=spawned_child_main,
            args=(app_reference(app), job_rc, res_wc, [], hostname, watch_memory),
            daemon=True,
        )
        try:
            process.start()
        except Exception as exc:
            raise ConfigurationError(
                f"cannot start a prefork child with start method {start_method!r}: {exc}"
            ) from exc
        job_rc.close()
        res_wc.close()
        # plain descriptors of our own, closed by the pool like a forked child's; the
        # connection objects would close their numbers again when collected
        job_w, res_r = os.dup(job_wc.fileno()), os.dup(res_rc.fileno())
        job_wc.close()
        res_rc.close()
    os.set_blocking(job_w, False)
    os.set_blocking(res_r, False)
    return Proc(process, job_w, res_r, quota)
