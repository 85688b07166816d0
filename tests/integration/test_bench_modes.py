"""``celeriac bench`` modes on the local RabbitMQ: ``--sweep`` with ``--plot``, ``--raw``,
and ``--against celery``."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from tests.integration.test_bench_amqp import bench, new_queue, queue_exists

pytestmark = pytest.mark.integration


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (after checking the signature)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def test_sweep_prints_one_sorted_table_and_plots_it(amqp_url: str, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out, png = tmp_path / "sweep.json", tmp_path / "sweep.png"
    queue = new_queue()
    proc = bench(
        "-n", "1000", "--latency", "20", "-c", "2", "--queue", queue,
        "--sweep", "prefetch=1,16", "pool=solo,threads",
        "--plot", str(png), "--json", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "celeriac bench --sweep (fastest drain first)" in proc.stdout
    assert "fastest drain:" in proc.stdout and "above the next" in proc.stdout
    data = json.loads(out.read_text())
    runs = data["sweep"]
    assert sorted((r["config"]["pool"], r["config"]["prefetch_multiplier"]) for r in runs) == [
        ("solo", 1),
        ("solo", 16),
        ("threads", 1),
        ("threads", 16),
    ]
    assert all(r["completed"] and len(r["latency_samples_ms"]) == 20 for r in runs)
    best = max(runs, key=lambda r: r["drain_rate"])
    assert data["drain_rate"] == best["drain_rate"]
    assert f"fastest drain: {best['label']}" in proc.stdout
    width, height = png_size(png)
    assert width > 800 and height > 300  # two panels: drain rate and latency CDF
    assert png.stat().st_size > 20_000
    assert not queue_exists(amqp_url, queue)


def test_raw_prints_the_bare_consume_rate_next_to_the_drain(amqp_url: str, tmp_path: Path) -> None:
    out = tmp_path / "raw.json"
    queue = new_queue()
    proc = bench(
        "-P", "solo", "-n", "3000", "--latency", "0", "--raw", "--queue", queue,
        "--json", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for row in ("drain rate (solo -c 1 x4)", "raw consume (bare AMQP client, prefetch 4)"):
        assert row in proc.stdout
    assert "worker drain / raw consume" in proc.stdout
    data = json.loads(out.read_text())
    raw = data["raw"]
    assert raw["publish_rate"] > 0 and raw["consume_rate"] > 0
    assert raw["prefetch"] == 4 and raw["queue"] == f"{queue}.raw"
    assert raw["drain_pct"] == pytest.approx(100 * data["drain_rate"] / raw["consume_rate"])
    assert f"{raw['drain_pct']:.0f}%" in proc.stdout
    assert not queue_exists(amqp_url, queue)
    assert not queue_exists(amqp_url, raw["queue"])


def test_against_celery_alternates_and_prints_ratios(amqp_url: str, tmp_path: Path) -> None:
    pytest.importorskip("celery")
    out = tmp_path / "vs.json"
    queue = new_queue()
    proc = bench(
        "-P", "threads", "-c", "2", "--prefetch-multiplier", "64", "-n", "500", "--latency",
        "10", "--against", "celery", "--repeat", "2", "--queue", queue, "--json", str(out),
        timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "celeriac bench: celeriac vs Celery, median of 2 (min-max)" in proc.stdout
    assert "celeriac/Celery: drain" in proc.stdout
    data = json.loads(out.read_text())
    assert [r["worker"] for r in data["runs"]] == ["celeriac", "celery", "celery", "celeriac"]
    assert all(r["completed"] for r in data["runs"])
    summary = data["summary"]
    for key in ("publish_rate", "drain_rate", "latency_p50"):
        assert summary[key]["celeriac"]["runs"] == 2 and summary[key]["celery"]["runs"] == 2
        ratio = summary[key]["celeriac"]["median"] / summary[key]["celery"]["median"]
        assert summary[key]["ratio"] == pytest.approx(ratio)
    assert data["drain_rate"] == summary["drain_rate"]["celeriac"]["median"]
    assert not queue_exists(amqp_url, queue)
