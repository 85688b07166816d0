"""Micro-benchmark: decoding one typical task message, compiled vs pure vs Celery's worker.

Run: ``.venv/bin/python -m pytest bench/test_decode.py --benchmark-only -q``. The message is
what Celery 5.7 sends for ``add.delay()`` (no arguments, every v2 header, embed object).
Results and the machine they came from are in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import importlib
import os
import uuid
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from tests.samples import celery_headers

from celeriac.serialization import loads

TASK_ID = str(uuid.uuid4())
HEADERS: dict[str, Any] = celery_headers(TASK_ID)
PROPERTIES: dict[str, Any] = {
    "content_type": "application/json",
    "content_encoding": "utf-8",
    "correlation_id": TASK_ID,
    "reply_to": "da1d476a-e1f9-3a00-b71e-7ca92964338c",
    "delivery_mode": 2,
}
BODY = b'[[], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]'
DELIVERY_INFO: dict[str, Any] = {"exchange": "", "routing_key": "celery", "redelivered": False}


def body_loads(
    body: bytes, content_type: str | None, encoding: str | None, compression: str | None
) -> Any:
    return loads(body, content_type, encoding)


def implementation(kind: str) -> ModuleType:
    if kind == "pure":
        return importlib.import_module("celeriac._speedups_py.message")
    if os.environ.get("CELERIAC_NO_EXTENSIONS") == "1":
        pytest.skip("pure-only run")
    try:
        return importlib.import_module("celeriac._speedups.message")
    except ImportError:
        pytest.skip("compiled speedups are not built")


@pytest.mark.parametrize("kind", ["compiled", "pure"])
def test_decode_headers(benchmark: Any, kind: str) -> None:
    """``MessageDecoder.decode()``: headers and properties; the body stays encoded."""
    benchmark.group = "decode: headers only"
    decode = implementation(kind).MessageDecoder(body_loads).decode
    msg = benchmark(decode, HEADERS, PROPERTIES, BODY, DELIVERY_INFO, 1)
    assert msg.id == TASK_ID


@pytest.mark.parametrize("kind", ["compiled", "pure"])
def test_decode_with_body(benchmark: Any, kind: str) -> None:
    """``decode()`` then ``decode_body()``: what reaching the task's arguments costs."""
    benchmark.group = "decode: headers and body"
    decode = implementation(kind).MessageDecoder(body_loads).decode

    def run() -> Any:
        msg = decode(HEADERS, PROPERTIES, BODY, DELIVERY_INFO, 1)
        msg.decode_body()
        return msg

    assert benchmark(run).args == []


def celery_request_factory() -> Callable[[], Any]:
    """Celery's worker-side path for one delivery: a kombu Message, then the Request the
    default strategy builds from it (which reads the headers and decodes the body)."""
    from celery import Celery
    from celery.worker.request import Request
    from kombu.message import Message

    app = Celery("bench", set_as_current=False)

    @app.task(name="proj.tasks.add", shared=False)
    def add() -> None:
        return None

    task = app.tasks["proj.tasks.add"]
    accept = {"application/json"}

    def run() -> Any:
        message = Message(
            body=BODY,
            delivery_tag=1,
            content_type=PROPERTIES["content_type"],
            content_encoding=PROPERTIES["content_encoding"],
            delivery_info=DELIVERY_INFO,
            properties=PROPERTIES,
            headers=HEADERS,
            accept=accept,
        )
        return Request(message, app=app, task=task, hostname="bench@host")

    return run


def test_celery_request(benchmark: Any) -> None:
    """Celery 5.7: kombu ``Message`` + ``celery.worker.request.Request`` (body included)."""
    benchmark.group = "decode: headers and body"
    run = celery_request_factory()
    assert benchmark(run).id == TASK_ID
