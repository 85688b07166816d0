"""Warm and cold shutdown of a worker process mid-run: nothing lost, nothing run twice (warm)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from celeriac import Celery

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
AMQP = "amqp://guest:guest@127.0.0.1:5672//"
LEDGER = redis.Redis.from_url("redis://127.0.0.1:6379/15")
POOLS = [("solo", 1), ("threads", 4), ("prefork", 2)]


@pytest.fixture
def names() -> Iterator[tuple[str, str]]:
    token = uuid.uuid4().hex[:10]
    queue, key = f"celeriac.test.shutdown.{token}", f"celeriac.test.shutdown.{token}"
    yield queue, key
    LEDGER.delete(key)
    app = Celery("cleanup", broker=AMQP, set_as_current=False)
    transport = app.connection(heartbeat=0)
    transport.connect()
    transport.delete_queue(queue)
    transport.delete_exchange(queue)
    transport.close()


def publish(queue: str, task: str, total: int, pause: float) -> None:
    client = Celery("client", broker=AMQP, set_as_current=False)
    for i in range(total):
        client.send_task(task, (i, pause), queue=queue, ignore_result=True)
    client.close()


def start(queue: str, key: str, pool: str, concurrency: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "FAULTS_QUEUE": queue, "FAULTS_KEY": key}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celeriac",
            "worker",
            "-A",
            "tests.integration.faults_app",
            "-P",
            pool,
            "-c",
            str(concurrency),
            "-Q",
            queue,
            "-l",
            "info",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def queued(queue: str) -> int:
    app = Celery("peek", broker=AMQP, set_as_current=False)
    transport = app.connection(heartbeat=0)
    transport.connect()
    try:
        return int(transport.declare_queue(queue, passive=True).message_count)
    finally:
        transport.close()


def wait_until(predicate: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.02)


@pytest.mark.parametrize(("pool", "concurrency"), POOLS)
def test_sigterm_mid_run_then_restart_runs_everything_exactly_once(
    names: tuple[str, str], pool: str, concurrency: int
) -> None:
    queue, key = names
    total = 10_000
    publish(queue, "faults.count", total, 0.0002)
    proc = start(queue, key, pool, concurrency)
    wait_until(lambda: LEDGER.hlen(key) > 2000, 60)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    log = out.decode(errors="replace")
    assert proc.returncode == 0, log[-3000:]
    ran = {int(k): int(v) for k, v in LEDGER.hgetall(key).items()}
    assert ran and max(ran.values()) == 1, "a task ran twice across a warm shutdown"
    left = queued(queue)
    assert len(ran) + left == total, f"{total - len(ran) - left} tasks lost"
    assert left > 0, "the worker finished before the signal; nothing was tested"

    proc = start(queue, key, pool, concurrency)
    wait_until(lambda: LEDGER.hlen(key) >= total, 120)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    ran = {int(k): int(v) for k, v in LEDGER.hgetall(key).items()}
    assert sorted(ran) == list(range(total))
    assert max(ran.values()) == 1


@pytest.mark.parametrize(("pool", "concurrency"), POOLS)
def test_sigquit_with_acks_late_loses_nothing(
    names: tuple[str, str], pool: str, concurrency: int
) -> None:
    queue, key = names
    total = 3_000
    publish(queue, "faults.count_late", total, 0.0005)
    proc = start(queue, key, pool, concurrency)
    wait_until(lambda: LEDGER.hlen(key) > 500, 60)
    proc.send_signal(signal.SIGQUIT)
    proc.communicate(timeout=60)
    proc = start(queue, key, pool, concurrency)
    wait_until(lambda: LEDGER.hlen(key) >= total, 120)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    ran = {int(k): int(v) for k, v in LEDGER.hgetall(key).items()}
    assert sorted(ran) == list(range(total))  # at least once each
