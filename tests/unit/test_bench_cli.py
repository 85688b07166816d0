"""``celeriac bench`` as users run it: a short run on the embedded broker, JSON checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def test_bench_on_embedded_broker_writes_every_number(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "celeriac",
            "bench",
            "-b",
            "memory://",
            "-n",
            "2000",
            "--latency",
            "50",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "120"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "publish rate" in proc.stdout and "drain rate" in proc.stdout
    data = json.loads(out.read_text())
    assert data["publish_rate"] > 0
    assert data["drain_rate"] > 0
    assert data["tasks_executed"] == 2000
    assert set(data["latency_ms"]) == {"p50", "p90", "p99", "max"}
    assert data["latency_ms"]["p50"] <= data["latency_ms"]["p99"] <= data["latency_ms"]["max"]
    assert data["config"]["broker"] == "memory://"
    assert data["environment"]["speedups"] in ("compiled", "pure")
