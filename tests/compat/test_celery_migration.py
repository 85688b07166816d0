"""A migration in progress: ``celery worker`` and ``celeriac worker`` consume one queue.

20,000 tasks published by a Celery client must each run exactly once across the two
workers, and both must take part. Runs are counted in a Redis ledger the task writes to,
outside either worker.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from tests.compat.celery_run import Run

pytestmark = pytest.mark.integration

TASKS = 20_000


@pytest.fixture
def workers() -> Iterator[tuple[Run, Run]]:
    uid = uuid.uuid4().hex[:10]
    # children are replaced along the way, in both workers
    extra = ("--max-tasks-per-child", "2000")
    celery_worker = Run("celery", "amqp", "prefork", uid=uid, extra=extra)
    celeriac_worker = Run("celeriac", "amqp", "prefork", uid=uid, extra=extra)
    try:
        celery_worker.start()
        celeriac_worker.start()
        yield celery_worker, celeriac_worker
    finally:
        celeriac_worker.stop()
        celery_worker.stop()
        celeriac_worker.client.close()
        celery_worker.cleanup()


def test_both_workers_share_a_queue_and_run_each_task_once(workers: tuple[Run, Run]) -> None:
    celery_worker, celeriac_worker = workers
    client = celery_worker.client
    run_id = uuid.uuid4().hex
    with client.producer_or_acquire() as producer:
        for n in range(TASKS):
            client.send_task("cp.ledger_hit", (run_id, n), ignore_result=True, producer=producer)
    hits_key = celery_worker.key("hits", run_id)
    ledger = celery_worker.ledger
    deadline = time.monotonic() + 240
    while ledger.hlen(hits_key) < TASKS and time.monotonic() < deadline:
        for run in workers:
            assert run.proc is not None and run.proc.poll() is None, run.stop() or run.output
        time.sleep(0.5)
    time.sleep(1.0)  # a task run twice would have had time to count again
    hits = ledger.hgetall(hits_key)
    assert len(hits) == TASKS, f"{TASKS - len(hits)} tasks never ran"
    twice = {n: c for n, c in hits.items() if c != "1"}
    assert not twice, f"tasks run more than once: {dict(list(twice.items())[:10])}"
    assert set(hits) == {str(n) for n in range(TASKS)}
    counted = ledger.hgetall(celery_worker.key("by_worker", run_id))
    by_worker = {name: int(count) for name, count in counted.items()}
    assert sum(by_worker.values()) == TASKS
    assert by_worker.get("celery", 0) > 0, by_worker
    assert by_worker.get("celeriac", 0) > 0, by_worker
    # both replaced children (worker_process_init again in the new ones)
    inits = ledger.hgetall(celery_worker.key("process_init"))
    for run in workers:
        assert list(inits.values()).count(run.nodename) > run.concurrency, inits
    assert celeriac_worker.stop() == 0, celeriac_worker.output
    assert celery_worker.stop() == 0, celery_worker.output
