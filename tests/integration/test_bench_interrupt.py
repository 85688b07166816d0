"""Ctrl-C in each phase of ``celeriac bench``: exit 130, what was measured is printed, and
the run's queue, worker process and stored results are gone."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psutil  # type: ignore[import-untyped]
import pytest

from celeriac.errors import ChannelError
from celeriac.transports.amqp import AMQPTransport
from tests.integration.test_bench_amqp import clean_env

pytestmark = pytest.mark.integration

REDIS_URL = "redis://127.0.0.1:6379/0"


def ready_count(url: str, queue: str) -> int | None:
    """Messages ready in ``queue``, ``None`` when there is no such queue."""
    transport = AMQPTransport(url)
    transport.connect()
    try:
        return int(transport.declare_queue(queue, passive=True).message_count)
    except ChannelError:
        return None
    finally:
        transport.close()


def workers_on(queue: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "worker" in cmdline and queue in cmdline:
            found.append(proc)
    return found


def interrupt(
    args: list[str], when: Callable[[], bool], out: Path, timeout: float = 30
) -> tuple[subprocess.CompletedProcess[str], dict[str, object]]:
    """Start ``celeriac bench``, send SIGINT once ``when()`` holds, wait for it to exit."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "celeriac", "bench", *args, "--json", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    try:
        deadline = time.monotonic() + timeout
        while not when():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the phase to interrupt never came"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    done = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    return done, json.loads(out.read_text())


def new_queue() -> str:
    return f"celeriac.test.bench.{uuid.uuid4().hex[:10]}"


def test_ctrl_c_while_publishing(amqp_url: str, tmp_path: Path) -> None:
    queue = new_queue()

    def publishing() -> bool:
        return (ready_count(amqp_url, queue) or 0) > 2000

    proc, data = interrupt(
        ["-n", "5000000", "-P", "solo", "--queue", queue], publishing, tmp_path / "b.json"
    )
    assert proc.returncode == 130, proc.stderr
    assert "interrupted during publish" in proc.stdout
    assert "stopped at" in proc.stdout and "of 5,000,000" in proc.stdout
    assert data["interrupted"] is True and data["interrupted_in"] == "publish"
    assert data["partial"]["publish"]["done"] >= 2000
    assert ready_count(amqp_url, queue) is None
    assert not workers_on(queue)


def test_ctrl_c_while_draining_stops_the_worker(amqp_url: str, tmp_path: Path) -> None:
    queue, tasks = new_queue(), 2000

    def draining() -> bool:
        if not workers_on(queue):
            return False
        ready = ready_count(amqp_url, queue)
        return ready is not None and ready < tasks - 20

    args = ["-n", str(tasks), "--task", "sleep:5", "-P", "solo", "--queue", queue]
    proc, data = interrupt(args, draining, tmp_path / "b.json")
    assert proc.returncode == 130, proc.stderr
    assert "interrupted during drain" in proc.stdout
    assert data["interrupted_in"] == "drain"
    assert data["publish_rate"] > 0  # the phase before was measured and is shown
    assert data["drain_rate"] is None
    assert ready_count(amqp_url, queue) is None
    assert not workers_on(queue)


def test_ctrl_c_during_round_trips_removes_stored_results(amqp_url: str, tmp_path: Path) -> None:
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(REDIS_URL)
    queue = new_queue()
    pattern = f"celery-task-meta-{queue}.rt.*"

    def round_trips() -> bool:
        return len(list(client.scan_iter(match=pattern, count=1000))) >= 5

    args = ["-n", "50", "--task", "sleep:20", "--latency", "1000", "-P", "solo"]
    args += ["--result-backend", REDIS_URL, "--queue", queue]
    proc, data = interrupt(args, round_trips, tmp_path / "b.json")
    assert proc.returncode == 130, proc.stderr
    assert "interrupted during latency" in proc.stdout
    assert data["interrupted_in"] == "latency"
    assert data["drain_rate"] > 0 and data["latency_ms"]["p50"] >= 20
    assert list(client.scan_iter(match=pattern, count=1000)) == []
    assert ready_count(amqp_url, queue) is None
    assert not workers_on(queue)
