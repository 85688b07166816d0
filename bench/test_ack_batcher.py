"""Micro-benchmark: the ack batcher's cost per delivery, compiled vs pure.

Run: ``.venv/bin/python -m pytest bench/test_ack_batcher.py --benchmark-only -q``. One round
is 6,400 deliveries on the common path: ``delivered(tag)`` then ``ack(tag)`` in order (early
acks), with ``max_batch=64`` so every 64th ack flushes one multiple-ack through a no-op
``send_ack``. The per-delivery figure is the round's time / 6,400 (``extra_info``). A second
case keeps one delivery running the whole time, so every ack goes out alone. Results and the
machine they came from are in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import importlib
import itertools
import os
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

PER_ROUND = 6_400
BATCH = 64


def implementation(kind: str) -> ModuleType:
    if kind == "pure":
        return importlib.import_module("celeriac._speedups_py.consumer")
    if os.environ.get("CELERIAC_NO_EXTENSIONS") == "1":
        pytest.skip("pure-only run")
    try:
        return importlib.import_module("celeriac._speedups.consumer")
    except ImportError:
        pytest.skip("compiled speedups are not built")


def send(tag: int, flag: bool) -> None:
    return None


def stream(batcher: Any, first: int) -> Callable[[], None]:
    """One round: PER_ROUND new deliveries from tag ``first`` on, each acked on arrival."""
    tags = itertools.count(first)
    delivered = batcher.delivered
    ack = batcher.ack

    def run() -> None:
        for tag in itertools.islice(tags, PER_ROUND):
            delivered(tag)
            ack(tag)

    return run


def record(benchmark: Any) -> None:
    stats = benchmark.stats.stats
    benchmark.extra_info["ns_per_delivery_median"] = round(stats.median / PER_ROUND * 1e9, 1)
    benchmark.extra_info["ns_per_delivery_min"] = round(stats.min / PER_ROUND * 1e9, 1)


@pytest.mark.parametrize("kind", ["compiled", "pure"])
def test_in_order_early_acks(benchmark: Any, kind: str) -> None:
    """delivered + ack in order, one multiple-ack per 64 deliveries."""
    benchmark.group = "ack batcher: in order, flush every 64"
    batcher = implementation(kind).AckBatcher(send, send, BATCH)
    benchmark(stream(batcher, 1))
    assert batcher.pending == 0
    assert batcher.outstanding == 0
    record(benchmark)


@pytest.mark.parametrize("kind", ["compiled", "pure"])
def test_behind_a_running_task(benchmark: Any, kind: str) -> None:
    """The same stream while delivery 1 stays running: individual acks, buffer compaction."""
    benchmark.group = "ack batcher: behind one running task"
    batcher = implementation(kind).AckBatcher(send, send, BATCH)
    batcher.delivered(1)
    benchmark(stream(batcher, 2))
    assert batcher.outstanding == 1
    record(benchmark)
