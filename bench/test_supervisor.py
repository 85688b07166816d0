"""Micro-benchmark: the prefork parent's dispatch cost per task, compiled vs pure.

Run: ``.venv/bin/python -m pytest bench/test_supervisor.py --benchmark-only -q``. One round
is 1,000 tasks as the parent handles them: ``encode_job`` of a typical Celery v2 message
(headers of a real ``apply_async``, a 40-byte JSON body), ``ChildSlots.sent``, then decoding
the child's STARTED and DONE records (fed 50 tasks at a time, as they arrive coalesced)
with ``started``/``done`` bookkeeping. The per-task figure is the round's time / 1,000.
Results and the machine they came from are in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

PER_ROUND = 1_000
BATCH = 50

MESSAGE = SimpleNamespace(
    headers={
        "lang": "py",
        "task": "proj.tasks.add",
        "id": "0b9b8a56-3a55-4f9e-9d1e-1f2d3c4b5a69",
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": "0b9b8a56-3a55-4f9e-9d1e-1f2d3c4b5a69",
        "parent_id": None,
        "argsrepr": "(2, 2)",
        "kwargsrepr": "{}",
        "origin": "gen123@host",
        "ignore_result": False,
    },
    body=b'[[2, 2], {}, {"callbacks": null, "errbacks": null, "chain": null}]',
    content_type="application/json",
    content_encoding="utf-8",
    correlation_id="0b9b8a56-3a55-4f9e-9d1e-1f2d3c4b5a69",
    reply_to="9d1e1f2d-3c4b-5a69-0b9b-8a563a554f9e",
    priority=0,
    delivery_info={"exchange": "", "routing_key": "celery", "redelivered": False},
)


def implementation(kind: str) -> ModuleType:
    if kind == "pure":
        return importlib.import_module("celeriac._speedups_py.supervisor")
    if os.environ.get("CELERIAC_NO_EXTENSIONS") == "1":
        pytest.skip("pure-only run")
    try:
        return importlib.import_module("celeriac._speedups.supervisor")
    except ImportError:
        pytest.skip("compiled speedups are not built")


def _completions(sup: ModuleType) -> list[bytes]:
    out = []
    for first in range(1, PER_ROUND + 1, BATCH):
        chunk = b"".join(
            sup.encode_completion(sup.STARTED, j, 4242, 0, 1_000_000 + j)
            + sup.encode_completion(sup.DONE, j, sup.ACK, 0, 1_000_050 + j)
            for j in range(first, first + BATCH)
        )
        out.append(chunk)
    return out


@pytest.mark.parametrize("kind", ["compiled", "pure"])
def test_dispatch_round(benchmark: Any, kind: str) -> None:
    sup = implementation(kind)
    chunks = _completions(sup)
    encode_job = sup.encode_job
    STARTED = sup.STARTED

    def round_() -> None:
        slots = sup.ChildSlots()
        decoder = sup.CompletionDecoder()
        out = bytearray()
        sent = slots.sent
        for job_id in range(1, PER_ROUND + 1):
            out += encode_job(job_id, MESSAGE)
            sent(job_id)
        for chunk in chunks:
            for record_kind, job_id, _, _, _ in decoder.feed(chunk):
                if record_kind == STARTED:
                    slots.started(job_id, 1.0)
                else:
                    slots.done(job_id)
        assert slots.inflight == 0

    benchmark(round_)
    benchmark.extra_info["per_task_us"] = benchmark.stats.stats.mean / PER_ROUND * 1e6
