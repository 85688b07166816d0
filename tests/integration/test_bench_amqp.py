"""``celeriac bench`` on the local RabbitMQ: the main-job command, an honest drain clock, the
worker as a process of its own, and nothing left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
import pytest

from celeriac.errors import ChannelError
from celeriac.transports.amqp import AMQPTransport

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("CELERIAC_BROKER_URL", "CELERY_BROKER_URL", "CELERIAC_BENCH_PROBE_URL")
    }
    return {**env, "COLUMNS": "160", **extra}


def bench(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "celeriac", "bench", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean_env(),
    )


def queue_exists(url: str, name: str) -> bool:
    transport = AMQPTransport(url)
    transport.connect()
    try:
        transport.declare_queue(name, passive=True)
        return True
    except ChannelError:
        return False
    finally:
        transport.close()


def new_queue() -> str:
    return f"celeriac.test.bench.{uuid.uuid4().hex[:10]}"


def test_main_job_command_runs_on_local_rabbitmq(amqp_url: str, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    queue = new_queue()
    proc = subprocess.run(
        [
            "bash",
            str(ROOT / "bench" / "run.sh"),
            "-n",
            "2000",
            "--latency",
            "50",
            "-P",
            "solo",
            "--queue",
            queue,
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=clean_env(),
    )
    assert proc.returncode == 0, proc.stderr
    assert "amqp://guest:**@localhost:5672//" in proc.stdout  # password masked
    assert "broker: RabbitMQ " in proc.stdout
    for row in ("publish rate", "drain rate (solo -c 1 x4)", "latency p99", "worker peak RSS"):
        assert row in proc.stdout
    data = json.loads(out.read_text())
    assert data["environment"]["broker"].startswith("RabbitMQ ")
    assert data["environment"]["worker_mode"] == "process"
    assert data["tasks"] == 2000 and data["completed"]
    assert data["publish_rate"] > 0 and data["drain_rate"] > 0
    assert data["worker_startup_seconds"] > 0
    assert data["cpu"]["broker_s"] > 0  # the broker's process is on this machine
    assert data["cpu"]["worker_s"] > 0 and data["cpu"]["client_s"] > 0
    assert data["worker_peak_rss_bytes"] > 10 * 2**20
    assert not queue_exists(amqp_url, queue)


def test_main_job_command_without_a_broker_runs_embedded(tmp_path: Path) -> None:
    proc = subprocess.run(
        ["bash", str(ROOT / "bench" / "run.sh"), "-n", "300", "--latency", "5"],
        capture_output=True,
        text=True,
        timeout=300,
        env=clean_env(CELERIAC_BENCH_PROBE_URL="amqp://guest:guest@127.0.0.1:1//"),
    )
    assert proc.returncode == 0, proc.stderr
    assert "no broker answers on 127.0.0.1:1: running on the embedded in-process broker" in (
        proc.stdout
    )
    assert "drain rate" in proc.stdout


class QueueWatch(threading.Thread):
    """An outside clock: py-amqp polls the queue's ready count (not celeriac's client) and
    notes when it first drops below ``total`` and when it reaches zero."""

    def __init__(self, queue: str, total: int) -> None:
        super().__init__(daemon=True)
        self.queue, self.total = queue, total
        self.first: float | None = None
        self.empty: float | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        import amqp

        with amqp.Connection("127.0.0.1:5672", userid="guest", password="guest") as conn:
            channel = conn.channel()
            seen_full = False
            while not self.stop.is_set():
                try:
                    ready = channel.queue_declare(self.queue, passive=True).message_count
                except amqp.exceptions.NotFound:
                    channel = conn.channel()
                    time.sleep(0.002)
                    continue
                now = time.perf_counter()
                seen_full = seen_full or ready >= self.total
                if seen_full and self.first is None and ready < self.total:
                    self.first = now
                if self.first is not None and ready == 0:
                    self.empty = now
                    return
                time.sleep(0.002)


def test_solo_drain_rate_agrees_with_an_outside_clock(amqp_url: str, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    queue, tasks = new_queue(), 20_000
    watch = QueueWatch(queue, tasks + 1)  # the tasks and the marker
    watch.start()
    try:
        proc = bench(
            "-P", "solo", "-n", str(tasks), "--latency", "0", "--queue", queue, "--json", str(out)
        )
    finally:
        watch.stop.set()
        watch.join(10)
    assert proc.returncode == 0, proc.stderr
    assert watch.first is not None and watch.empty is not None
    outside = tasks / (watch.empty - watch.first)
    reported = json.loads(out.read_text())["drain_rate"]
    assert abs(reported - outside) / outside < 0.10, (reported, outside)


def test_worker_flags_reach_a_worker_process(amqp_url: str, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    queue = new_queue()
    seen: list[list[str]] = []
    done = threading.Event()

    def spy() -> None:
        while not done.is_set() and not seen:
            for proc in psutil.process_iter(["cmdline"]):
                cmdline = proc.info["cmdline"] or []
                if "worker" in cmdline and queue in cmdline:
                    seen.append(cmdline)
                    break
            time.sleep(0.05)

    thread = threading.Thread(target=spy, daemon=True)
    thread.start()
    proc = bench(
        "-P", "prefork", "-c", "2", "--prefetch-multiplier", "8", "-O", "fair",
        "--max-tasks-per-child", "500", "--acks-late", "--task", "echo", "--body-size", "100",
        "-n", "2000", "--latency", "20", "--publishers", "2", "--queue", queue,
        "--json", str(out),
    )  # fmt: skip
    done.set()
    thread.join(5)
    assert proc.returncode == 0, proc.stderr
    assert seen, "no worker process with the run's queue was seen"
    cmdline = " ".join(seen[0])
    assert "celeriac worker -A celeriac.bench.apps:celeriac_app" in cmdline
    assert "-P prefork -c 2 --prefetch-multiplier 8" in cmdline
    assert "-O fair --max-tasks-per-child 500" in cmdline
    data = json.loads(out.read_text())
    assert data["config"]["acks_late"] is True and data["config"]["publishers"] == 2
    assert "publish rate (2 publishers)" in proc.stdout
    assert data["completed"] and len(data["latency_samples_ms"]) == 20
    assert not queue_exists(amqp_url, queue)


def test_an_existing_queue_is_refused(amqp_url: str, names: Any) -> None:
    queue = names.queue("existing")
    transport = AMQPTransport(amqp_url)
    transport.connect()
    transport.declare_queue(queue, durable=False)
    transport.close()
    proc = bench("-n", "10", "--queue", queue)
    assert proc.returncode == 2
    assert f"queue {queue!r} already exists" in proc.stderr
    assert queue_exists(amqp_url, queue)
