"""``celeriac bench`` as users run it on the embedded broker: JSON checked, fallback said."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest


def free_port() -> int:
    """A local TCP port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bench(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "celeriac", "bench", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "160", **(env or {})},
    )


def test_bench_on_embedded_broker_writes_every_number(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = bench("-b", "memory://", "-n", "2000", "--latency", "50", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "publish rate" in proc.stdout and "drain rate" in proc.stdout
    assert "-P prefork cannot run on the embedded broker: -P solo instead" in proc.stdout
    data = json.loads(out.read_text())
    assert data["publish_rate"] > 0
    assert data["drain_rate"] > 0
    assert data["tasks"] == 2000 and data["completed"] is True
    assert set(data["latency_ms"]) == {"p50", "p90", "p99", "max"}
    assert data["latency_ms"]["p50"] <= data["latency_ms"]["p99"] <= data["latency_ms"]["max"]
    assert len(data["latency_samples_ms"]) == 50
    assert data["config"]["broker"] == "memory://"
    assert data["config"]["pool"] == "solo"
    assert data["environment"]["speedups"] in ("compiled", "pure")
    assert data["environment"]["worker_mode"] == "in-process"
    assert data["cpu"]["client_s"] > 0
    assert data["cpu"]["broker_s"] is None and data["cpu"]["worker_s"] is None
    assert data["worker_peak_rss_bytes"] > 0


def test_no_broker_answering_runs_embedded_and_says_so(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    port = free_port()
    env = {"CELERIAC_BENCH_PROBE_URL": f"amqp://guest:guest@127.0.0.1:{port}//"}
    for name in ("CELERIAC_BROKER_URL", "CELERY_BROKER_URL"):
        env[name] = ""
    proc = bench("-n", "500", "--latency", "5", "-P", "threads", "--json", str(out), env=env)
    assert proc.returncode == 0, proc.stderr
    assert f"no broker answers on 127.0.0.1:{port}" in proc.stdout
    assert "embedded in-process broker (memory://)" in proc.stdout
    data = json.loads(out.read_text())
    assert data["config"]["broker"] == "memory://"
    assert data["config"]["pool"] == "threads"
    assert any("no broker answers" in note for note in data["environment"]["notes"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--task", "nap:3"], "task kind must be noop, echo, sleep:MS or cpu:US, got 'nap:3'"),
        (["prefetch=1,4"], "sweep axes need --sweep"),
        (["--sweep"], "--sweep needs axes"),
        (["--sweep", "pool=solo,eventlet"], "'eventlet'"),
        (["-P", "gevent"], "'gevent' is not one of"),
        (["--publishers", "0"], "0 is not in the range x>=1"),
        (["--raw"], "--raw needs a real broker, not memory://"),
        (["--against", "celery"], "--against needs a real broker, not memory://"),
        (["--against", "celery", "--sweep", "pool=solo"], "--sweep and --against cannot be"),
        (["--against", "rq"], "'rq' is not 'celery'"),
    ],
)
def test_bad_options_are_refused_with_the_bad_value(args: list[str], message: str) -> None:
    proc = bench("-b", "memory://", "-n", "10", *args)
    assert proc.returncode == 2
    assert message in proc.stderr


def test_embedded_sweep_prints_one_table_and_the_winner(tmp_path: Path) -> None:
    out = tmp_path / "sweep.json"
    proc = bench(
        "-b",
        "memory://",
        "-n",
        "500",
        "--latency",
        "0",
        "--sweep",
        "prefetch=1,8",
        "pool=solo,threads,prefork",
        "--json",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    assert "prefork is left out of the sweep on the embedded broker" in proc.stdout
    assert "fastest drain:" in proc.stdout
    data = json.loads(out.read_text())
    assert sorted(
        (r["config"]["pool"], r["config"]["prefetch_multiplier"]) for r in data["sweep"]
    ) == [
        ("solo", 1),
        ("solo", 8),
        ("threads", 1),
        ("threads", 8),
    ]
    assert data["drain_rate"] == max(r["drain_rate"] for r in data["sweep"])


def test_against_celery_without_celery_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.util

    import click

    from celeriac.bench.command import Plan
    from celeriac.bench.config import BenchOptions
    from celeriac.cli.bench import _check

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "celery" else real(name, *a)
    )
    plan = Plan(BenchOptions(broker="amqp://localhost//"), against="celery", repeat=3)
    with pytest.raises(click.UsageError, match="needs the celery package: pip install celery"):
        _check(plan)
