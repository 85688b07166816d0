"""Worker-wide state: revoked ids, requests held and running, counters for ``stats``."""

from __future__ import annotations

import threading
import time
from collections import Counter, OrderedDict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from celeriac.worker.request import Request

__all__ = ["LimitedSet", "WorkerState"]

REVOKES_MAX = 50_000
REVOKE_EXPIRES = 10_800.0


class LimitedSet:
    """A set of ids that forgets the oldest past ``maxlen`` and any older than ``expires`` s."""

    def __init__(self, maxlen: int = REVOKES_MAX, expires: float = REVOKE_EXPIRES) -> None:
        self.maxlen = maxlen
        self.expires = expires
        self._data: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, item: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self._lock:
            self._data.pop(item, None)
            self._data[item] = now
            self._purge(now)

    def discard(self, item: str) -> None:
        with self._lock:
            self._data.pop(item, None)

    def _purge(self, now: float) -> None:
        data = self._data
        while len(data) > self.maxlen:
            data.popitem(last=False)
        limit = now - self.expires
        while data:
            first = next(iter(data.values()))
            if first >= limit:
                break
            data.popitem(last=False)

    def __contains__(self, item: object) -> bool:
        return item in self._data

    def __len__(self) -> int:
        return len(self._data)

    def as_list(self) -> list[str]:
        return list(self._data)


class WorkerState:
    """What one worker knows about its tasks (shared by the consumer, pool and control)."""

    def __init__(self) -> None:
        self.revoked = LimitedSet()
        self.active: dict[str, Request] = {}
        self.reserved: dict[str, Request] = {}
        self.scheduled: dict[str, Request] = {}
        self.total: Counter[str] = Counter()
        self.processed = 0
        self.started_at = time.monotonic()
        # pool threads report here concurrently; an uncontended lock costs ~50 ns
        self._lock = threading.Lock()

    def task_accepted(self, request: Request) -> None:
        with self._lock:
            self.reserved.pop(request.id, None)
            self.active[request.id] = request

    def task_ready(self, request: Request) -> None:
        with self._lock:
            self.active.pop(request.id, None)
            self.total[request.name] += 1
            self.processed += 1
