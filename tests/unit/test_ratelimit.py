"""Rate limits: parsing, the token bucket, and a worker honouring ``rate_limit``."""

from __future__ import annotations

import time

import pytest

from celeriac import Celery
from celeriac.errors import ConfigurationError
from celeriac.testing import start_worker
from celeriac.worker.ratelimit import TokenBucket, parse_rate


@pytest.mark.parametrize(
    ("rate", "per_second"),
    [("10/s", 10.0), ("120/m", 2.0), ("3600/h", 1.0), (5, 5.0), ("7", 7.0), (None, 0.0)],
)
def test_parse_rate(rate: str | float | None, per_second: float) -> None:
    assert parse_rate(rate) == pytest.approx(per_second)


def test_parse_rate_rejects_garbage() -> None:
    with pytest.raises(ConfigurationError, match="invalid rate limit string"):
        parse_rate("ten per second")


def test_token_bucket() -> None:
    bucket = TokenBucket(fill_rate=100.0)
    assert bucket.can_consume()
    assert not bucket.can_consume()
    assert 0 < bucket.expected_time() <= 0.01
    time.sleep(0.011)
    assert bucket.can_consume()


def test_worker_spaces_rate_limited_tasks_and_keeps_order(app: Celery) -> None:
    ran: list[tuple[int, float]] = []

    @app.task(rate_limit="20/s")
    def limited(i: int) -> int:
        ran.append((i, time.monotonic()))
        return i

    @app.task
    def free(i: int) -> int:
        return i

    with start_worker(app):
        results = [limited.delay(i) for i in range(10)]
        # an unlimited task is not stuck behind the limited ones
        assert free.delay(99).get(timeout=5) == 99
        assert [r.get(timeout=10) for r in results] == list(range(10))
    assert [i for i, _ in ran] == list(range(10))
    span = ran[-1][1] - ran[0][1]
    # nine gaps of 1/20 s each; allow scheduling slack only upwards
    assert span >= 9 / 20 * 0.9
