"""A timer run by the consumer loop: ETA tasks and periodic housekeeping, never busy-waiting."""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["Entry", "Timer"]

logger = logging.getLogger("celeriac.worker.timer")


class Entry:
    """A scheduled call; :meth:`cancel` makes it a no-op."""

    __slots__ = ("args", "cancelled", "fun", "when")

    def __init__(self, when: float, fun: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.when = when
        self.fun = fun
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Timer:
    """A heap of calls due at wall-clock times, run by whoever calls :meth:`run_due`.

    ETAs are absolute wall-clock times from messages, so the heap is keyed on ``time.time()``;
    the wait itself is a bounded sleep in the broker's ``drain_events``.
    """

    def __init__(self, on_schedule: Callable[[], None] | None = None) -> None:
        self._heap: list[tuple[float, int, Entry]] = []
        self._counter = itertools.count()
        self._lock = threading.Lock()
        self.on_schedule = on_schedule

    def call_at(self, when: float, fun: Callable[..., Any], *args: Any) -> Entry:
        entry = Entry(when, fun, args)
        with self._lock:
            heapq.heappush(self._heap, (when, next(self._counter), entry))
        if self.on_schedule is not None:
            self.on_schedule()
        return entry

    def call_after(self, seconds: float, fun: Callable[..., Any], *args: Any) -> Entry:
        return self.call_at(time.time() + seconds, fun, *args)

    def run_due(self, now: float | None = None) -> float | None:
        """Run every call that is due; return seconds until the next one (``None``: none)."""
        heap = self._heap
        while heap:
            now = time.time() if now is None else now
            with self._lock:
                if not heap:
                    return None
                when, _, entry = heap[0]
                if when > now:
                    return when - now
                heapq.heappop(heap)
            if entry.cancelled:
                continue
            try:
                entry.fun(*entry.args)
            except Exception as exc:  # one failing entry must not stop the loop
                logger.exception("timer entry %r raised: %r", entry.fun, exc)
            now = None
        return None

    def clear(self) -> list[Entry]:
        with self._lock:
            entries = [e for _, _, e in self._heap if not e.cancelled]
            self._heap.clear()
        return entries

    def __len__(self) -> int:
        return len(self._heap)
