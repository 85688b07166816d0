"""``celeriac bench`` with no broker given picks the local RabbitMQ and names it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_bench_uses_local_rabbitmq_and_cleans_up(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {
        k: v for k, v in os.environ.items() if k not in ("CELERIAC_BROKER_URL", "CELERY_BROKER_URL")
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "celeriac",
            "bench",
            "-n",
            "2000",
            "--latency",
            "50",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env={**env, "COLUMNS": "120"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "amqp://guest:**@localhost:5672//" in proc.stdout  # password masked
    data = json.loads(out.read_text())
    assert data["environment"]["broker"].startswith("RabbitMQ ")
    assert data["tasks_executed"] == 2000
    listing = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "name"], capture_output=True, text=True, timeout=60
    ).stdout
    assert data["config"]["queue"] not in listing.split()
