"""Per-task rate limits (``rate_limit="10/s"``): a token bucket and an ordered waiting line."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from celeriac.errors import ConfigurationError

if TYPE_CHECKING:
    from celeriac.worker.request import Request
    from celeriac.worker.timer import Timer

__all__ = ["RateLimiter", "TokenBucket", "parse_rate"]

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_rate(rate: str | float | None) -> float:
    """Tasks per second from Celery's forms: ``"10/s"``, ``"100/m"``, ``"5/h"``, or a number
    (per second). ``0``/``None`` means no limit."""
    if rate is None or rate == "":
        return 0.0
    if isinstance(rate, (int, float)):
        return float(rate)
    count, _, unit = str(rate).partition("/")
    try:
        per = _UNITS[unit.strip()[:1] or "s"]
        return float(count) / per
    except (KeyError, ValueError):
        raise ConfigurationError(
            f"invalid rate limit string: {rate!r} (use e.g. '10/s', '100/m', '5/h')"
        ) from None


class TokenBucket:
    """``fill_rate`` tokens per second, holding at most ``capacity``."""

    def __init__(self, fill_rate: float, capacity: float = 1.0) -> None:
        self.fill_rate = fill_rate
        self.capacity = capacity
        self._tokens = capacity
        self._stamp = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.fill_rate)
        self._stamp = now

    def can_consume(self, tokens: float = 1.0) -> bool:
        self._refill()
        if self._tokens >= tokens:
            self._tokens -= tokens
            return True
        return False

    def expected_time(self, tokens: float = 1.0) -> float:
        """Seconds until ``tokens`` are available."""
        self._refill()
        return max(0.0, (tokens - self._tokens) / self.fill_rate)


class _Line:
    __slots__ = ("bucket", "discarded", "rate", "waiting")

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.discarded = False
        self.bucket = TokenBucket(rate)
        self.waiting: deque[Request] = deque()


class RateLimiter:
    """Runs rate-limited requests in arrival order as their bucket allows, via the timer."""

    def __init__(
        self,
        timer: Timer,
        apply: Callable[[Request], None],
        hold: Callable[[], None],
        release: Callable[[], None],
    ) -> None:
        self.timer = timer
        self.apply = apply
        self.hold = hold
        self.release = release
        self._lines: dict[str, _Line] = {}

    def submit(self, request: Request, rate_limit: str | float) -> None:
        rate = parse_rate(rate_limit)
        if rate <= 0:
            self.apply(request)
            return
        line = self._lines.get(request.name)
        if line is None or line.rate != rate:
            line = self._lines[request.name] = _Line(rate)
        if not line.waiting and line.bucket.can_consume():
            self.apply(request)
            return
        # held unacked like an ETA task: prefetch is raised so other tasks keep flowing
        self.hold()
        line.waiting.append(request)
        if len(line.waiting) == 1:
            self.timer.call_after(line.bucket.expected_time(), self._drain, line)

    def _drain(self, line: _Line) -> None:
        if line.discarded:
            return
        while line.waiting and line.bucket.can_consume():
            request = line.waiting.popleft()
            self.release()
            self.apply(request)
        if line.waiting:
            self.timer.call_after(line.bucket.expected_time(), self._drain, line)

    def discard(self) -> int:
        """Drop every waiting request (their deliveries died with the connection)."""
        count = self.waiting()
        for line in self._lines.values():
            line.discarded = True
        self._lines.clear()
        return count

    def waiting(self) -> int:
        return sum(len(line.waiting) for line in self._lines.values())
