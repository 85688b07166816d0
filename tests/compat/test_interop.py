"""Celery on the other end, over the real RabbitMQ, with the Redis and the RPC backends.

Celery client -> ``celeriac worker`` and celeriac client -> ``celery worker``: the same
values, exceptions and retries must come back either way. Workers run as separate processes,
started as users start them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.compat.interop.tasks import InteropError

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# pyamqp://, not amqp://: with librabbitmq importable kombu would pick it for amqp://, and
# it does not work with kombu 5.7 (basic_consume(on_cancel=...))
BROKER = os.environ.get("CELERIAC_TEST_AMQP", "pyamqp://guest:guest@127.0.0.1:5672//")
REDIS = "redis://127.0.0.1:6379/15"

VALUES: list[Any] = [
    "ünïcødé ☃ 𝄞",
    2**40,
    -7,
    3.25,
    None,
    True,
    False,
    [1, [2, [3, "deep"]]],
    {"a": {"b": [1, 2]}, "ü": None},
    datetime(2026, 11, 25, 9, 36, 4, 335211),
    datetime(2026, 11, 25, 9, 36, 4, 335211, tzinfo=timezone.utc),
    Decimal("3.14"),
    uuid.UUID("cc2de619-5e77-4510-bcef-99ac96565033"),
]
BIG = "x" * 1_000_000


def _worker_command(kind: str, queue: str) -> list[str]:
    if kind == "celeriac":
        return [
            sys.executable,
            "-m",
            "celeriac",
            "worker",
            "-A",
            "tests.compat.interop.celeriac_app",
            "-P",
            "solo",
            "-Q",
            queue,
            "-l",
            "warning",
        ]
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "tests.compat.interop.celery_app",
        "worker",
        "-P",
        "solo",
        "-Q",
        queue,
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "-l",
        "warning",
        "-n",
        f"interop-{queue}@%h",
    ]


@pytest.fixture(params=["redis", "rpc"])
def backend_url(request: pytest.FixtureRequest) -> str:
    return REDIS if request.param == "redis" else "rpc://"


@pytest.fixture
def queue() -> Iterator[str]:
    name = f"celeriac.test.interop.{uuid.uuid4().hex[:10]}"
    yield name
    import amqp  # py-amqp, installed with celery: tidy up what the run declared

    with amqp.Connection("127.0.0.1:5672", userid="guest", password="guest") as conn:
        channel = conn.channel()
        channel.queue_delete(name)
        channel.exchange_delete(name)


def start_worker_process(kind: str, queue: str, backend: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "INTEROP_QUEUE": queue,
        "INTEROP_BROKER": BROKER,
        "INTEROP_BACKEND": backend,
        "INTEROP_REDIS": REDIS,
    }
    return subprocess.Popen(
        _worker_command(kind, queue),
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def stop_worker_process(proc: subprocess.Popen[bytes]) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out.decode(errors="replace")


def client_app(kind: str, queue: str, backend: str) -> Any:
    if kind == "celery":
        import celery

        app: Any = celery.Celery(
            f"client-{uuid.uuid4().hex[:6]}", broker=BROKER, backend=backend, set_as_current=False
        )
    else:
        import celeriac

        app = celeriac.Celery(
            f"client-{uuid.uuid4().hex[:6]}", broker=BROKER, backend=backend, set_as_current=False
        )
    app.conf.task_default_queue = queue
    app.conf.result_expires = 600
    return app


@pytest.mark.parametrize(("client", "worker"), [("celery", "celeriac"), ("celeriac", "celery")])
def test_values_errors_and_retries_cross_over(
    client: str, worker: str, queue: str, backend_url: str
) -> None:
    proc = start_worker_process(worker, queue, backend_url)
    app = client_app(client, queue, backend_url)
    try:
        # the first round trip also waits for the worker to be up
        assert app.send_task("interop.echo", (1,)).get(timeout=60) == [[1], {}]

        result = app.send_task("interop.echo", VALUES, {"k": VALUES[-2], "big": BIG})
        args, kwargs = result.get(timeout=30)
        assert args == VALUES
        assert [type(v) for v in args] == [type(v) for v in VALUES]
        assert kwargs == {"k": VALUES[-2], "big": BIG}

        with pytest.raises(InteropError) as info:
            app.send_task("interop.fail", ("bad", 7)).get(timeout=30)
        assert info.value.args == ("bad", 7)
        with pytest.raises(ValueError) as verr:
            app.send_task("interop.value_error").get(timeout=30)
        assert verr.value.args == ("boom", 42)

        retried = app.send_task("interop.retry_twice", (5,))
        assert retried.get(timeout=30) == [5, 2]
    finally:
        output = stop_worker_process(proc)
        app.close()
    assert proc.returncode == 0, output
