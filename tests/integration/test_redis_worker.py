"""A worker on the Redis broker: every task exactly once, and nothing lost to a SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

redis = pytest.importorskip("redis")

from celeriac import Celery  # noqa: E402
from celeriac.testing import start_worker  # noqa: E402

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BROKER = os.environ.get("CELERIAC_TEST_REDIS_BROKER", "redis://127.0.0.1:6379/14")
LEDGER = "redis://127.0.0.1:6379/15"  # where faults_app counts


@pytest.fixture
def names() -> Iterator[tuple[str, str, str]]:
    """A queue, a ledger key and a key prefix that no other run uses."""
    token = uuid.uuid4().hex[:10]
    prefix = f"celeriac-worker-{token}:"
    yield f"celeriac.test.redis.{token}", f"celeriac.test.redis.{token}", prefix
    redis.Redis.from_url(LEDGER).delete(f"celeriac.test.redis.{token}")
    broker = redis.Redis.from_url(BROKER)
    keys = list(broker.scan_iter(match=f"{prefix}*"))
    if keys:
        broker.delete(*keys)


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_in_process_worker_runs_2000_tasks_exactly_once(names: tuple[str, str, str]) -> None:
    queue, key, prefix = names
    ledger = redis.Redis.from_url(LEDGER)
    app = Celery("redis-worker", broker=BROKER, set_as_current=False)
    app.conf.task_default_queue = queue
    app.conf.broker_transport_options = {"global_keyprefix": prefix}

    @app.task(name="redis.count", ignore_result=True)
    def count(i: int) -> None:
        ledger.hincrby(key, str(i), 1)

    total = 2000
    with start_worker(app, pool="threads", concurrency=4, queues=[queue]):
        for i in range(total):
            count.delay(i)
        wait_for(lambda: ledger.hlen(key) >= total, 120, "2000 tasks")
        time.sleep(0.5)  # a duplicate would show up now
    counts = {int(k): int(v) for k, v in ledger.hgetall(key).items()}
    assert sorted(counts) == list(range(total))
    assert set(counts.values()) == {1}
    broker = redis.Redis.from_url(BROKER)
    assert broker.hlen(f"{prefix}unacked") == 0
    assert broker.llen(f"{prefix}{queue}") == 0
    app.close()


def test_connections_killed_mid_stream_lose_nothing(names: tuple[str, str, str]) -> None:
    queue, key, prefix = names
    ledger = redis.Redis.from_url(LEDGER)
    broker = redis.Redis.from_url(BROKER)
    name = f"celeriac-test-{uuid.uuid4().hex[:8]}"
    app = Celery("redis-worker", broker=BROKER, set_as_current=False)
    app.conf.task_default_queue = queue
    app.conf.broker_transport_options = {"global_keyprefix": prefix, "client_name": name}

    @app.task(name="redis.count", ignore_result=True)
    def count(i: int) -> None:
        ledger.hincrby(key, str(i), 1)

    client = Celery("client", broker=BROKER, set_as_current=False)
    client.conf.task_default_queue = queue
    client.conf.broker_transport_options = {"global_keyprefix": prefix}
    total = 1000
    for i in range(total):
        client.send_task("redis.count", (i,), ignore_result=True)
    client.close()
    with start_worker(app, queues=[queue]) as worker:
        wait_for(lambda: ledger.hlen(key) >= 200, 60, "the first 200 tasks")
        # as a Redis restart or a network cut would: every connection of the worker goes
        for entry in broker.client_list():
            if entry["name"] == name:
                broker.client_kill_filter(_id=entry["id"])
        wait_for(lambda: ledger.hlen(key) >= total, 60, "every task after the reconnect")
        assert worker.consumer.reconnects >= 1
    counts = {int(k): int(v) for k, v in ledger.hgetall(key).items()}
    assert sorted(counts) == list(range(total))  # 0 lost
    # what was delivered and not acked when the connection went may run again, no more
    assert sum(counts.values()) <= total + 4  # the prefetch of a solo worker
    assert broker.hlen(f"{prefix}unacked") == 0
    app.close()


def start_worker_process(queue: str, key: str, prefix: str) -> subprocess.Popen[bytes]:
    options = {"global_keyprefix": prefix, "visibility_timeout": 3, "unacked_restore_interval": 0.5}
    env = {
        **os.environ,
        "FAULTS_QUEUE": queue,
        "FAULTS_KEY": key,
        "FAULTS_BROKER": BROKER,
        "FAULTS_TRANSPORT_OPTIONS": json.dumps(options),
    }
    command = [
        sys.executable,
        "-m",
        "celeriac",
        "worker",
        "-A",
        "tests.integration.faults_app",
        "-P",
        "solo",
        "-Q",
        queue,
        "-l",
        "warning",
    ]
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def test_sigkilled_worker_leaves_its_prefetched_tasks_restorable(
    names: tuple[str, str, str],
) -> None:
    queue, key, prefix = names
    ledger = redis.Redis.from_url(LEDGER)
    broker = redis.Redis.from_url(BROKER)
    client = Celery("client", broker=BROKER, set_as_current=False)
    client.conf.task_default_queue = queue
    client.conf.broker_transport_options = {"global_keyprefix": prefix}
    total = 12
    for i in range(total):
        client.send_task("faults.count_late", (i, 0.2), ignore_result=True)
    client.close()

    first = start_worker_process(queue, key, prefix)
    try:
        wait_for(lambda: ledger.hlen(key) >= 1, 30, "the first task")
        wait_for(lambda: broker.hlen(f"{prefix}unacked") >= 2, 10, "prefetched tasks")
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=10)
    held = broker.hlen(f"{prefix}unacked")
    assert held >= 2  # the killed worker's: running (acks_late) and prefetched
    assert ledger.hlen(key) < total

    second = start_worker_process(queue, key, prefix)
    try:
        wait_for(lambda: ledger.hlen(key) == total, 60, "every task after the restore")
    finally:
        second.send_signal(signal.SIGTERM)
        output = second.communicate(timeout=30)[0].decode(errors="replace")
    counts = {int(k): int(v) for k, v in ledger.hgetall(key).items()}
    assert sorted(counts) == list(range(total))  # 0 lost; the one running may have run twice
    assert sum(counts.values()) <= total + 1
    assert second.returncode == 0, output
    assert broker.hlen(f"{prefix}unacked") == 0


def test_eta_beyond_the_visibility_timeout_is_warned_about(
    names: tuple[str, str, str], caplog: pytest.LogCaptureFixture
) -> None:
    queue, _, prefix = names
    broker = redis.Redis.from_url(BROKER)
    app = Celery("redis-worker", broker=BROKER, set_as_current=False)
    app.conf.task_default_queue = queue
    app.conf.broker_transport_options = {"global_keyprefix": prefix, "visibility_timeout": 30}

    @app.task(name="redis.noop", ignore_result=True)
    def noop() -> None:
        pass

    caplog.set_level("WARNING", logger="celeriac.worker.strategy")
    with start_worker(app, queues=[queue]):
        noop.apply_async(countdown=10)
        wait_for(lambda: broker.hlen(f"{prefix}unacked") == 1, 10, "the held task")
        assert "visibility timeout" not in caplog.text
        noop.apply_async(countdown=120)
        wait_for(lambda: broker.hlen(f"{prefix}unacked") == 2, 10, "the second held task")
        wait_for(lambda: "visibility timeout" in caplog.text, 5, "the warning")
    # held tasks go back to the queue when the worker stops
    assert broker.hlen(f"{prefix}unacked") == 0
    assert broker.llen(f"{prefix}{queue}") == 2
    app.close()
