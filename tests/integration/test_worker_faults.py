"""A worker against the real RabbitMQ under faults: the ledger lives in Redis, outside it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import redis

from celeriac import Celery
from celeriac.errors import ConnectionBlocked

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
AMQP = "amqp://guest:guest@127.0.0.1:5672//"


@pytest.fixture
def names() -> Iterator[tuple[str, str]]:
    token = uuid.uuid4().hex[:10]
    queue, key = f"celeriac.test.faults.{token}", f"celeriac.test.faults.{token}"
    yield queue, key
    redis.Redis.from_url("redis://127.0.0.1:6379/15").delete(key)
    app = Celery("cleanup", broker=AMQP, set_as_current=False)
    transport = app.connection()
    transport.connect()
    transport.delete_queue(queue)
    transport.delete_exchange(queue)
    transport.close()


def rabbitmq_connection_of(pid: int) -> str:
    """The broker-side id (``close_connection`` wants it) of the AMQP connection of ``pid``."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        ports = {
            conn.laddr.port
            for conn in psutil.Process(pid).net_connections(kind="tcp")
            if conn.raddr and conn.raddr.port == 5672 and conn.status == "ESTABLISHED"
        }
        listing = subprocess.run(
            ["rabbitmqctl", "-q", "list_connections", "--no-table-headers", "pid", "peer_port"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        for line in listing.splitlines():
            conn_pid, _, peer_port = line.rpartition("\t")
            if peer_port.strip().isdigit() and int(peer_port) in ports:
                return conn_pid.strip()
        time.sleep(0.2)
    raise AssertionError(f"process {pid} holds no AMQP connection the broker knows")


def test_connection_closed_by_broker_mid_stream_loses_nothing(names: tuple[str, str]) -> None:
    queue, key = names
    ledger = redis.Redis.from_url("redis://127.0.0.1:6379/15")
    total = 5000
    client = Celery("client", broker=AMQP, set_as_current=False)
    client.conf.task_default_queue = queue
    for i in range(total):
        client.send_task("faults.record", (i,), ignore_result=True)
    client.close()

    env = {**os.environ, "FAULTS_QUEUE": queue, "FAULTS_KEY": key}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celeriac",
            "worker",
            "-A",
            "tests.integration.faults_app",
            "-P",
            "solo",
            "-Q",
            queue,
            "-l",
            "info",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while ledger.scard(key) < 1000 and time.monotonic() < deadline:
            time.sleep(0.01)
        name = rabbitmq_connection_of(proc.pid)
        subprocess.run(
            ["rabbitmqctl", "close_connection", name, "celeriac fault test"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        while ledger.scard(key) < total and time.monotonic() < deadline + 60:
            time.sleep(0.05)
        done = ledger.scard(key)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    log = out.decode(errors="replace")
    assert done == total, f"{total - done} tasks lost\n{log[-3000:]}"
    assert "cannot reach the broker" in log  # it really lost the connection and came back
    assert proc.returncode == 0, log[-3000:]


def test_publish_under_memory_alarm_fails_with_a_clear_timeout(
    names: tuple[str, str],
) -> None:
    queue, _ = names
    app = Celery("alarmed", broker=AMQP, set_as_current=False)
    app.conf.task_default_queue = queue
    app.conf.broker_transport_options = {"publish_timeout": 2.0}
    app.send_task("faults.record", (0,), ignore_result=True)  # connect and declare first
    subprocess.run(
        ["rabbitmqctl", "set_vm_memory_high_watermark", "0.0000001"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    try:
        # the alarm takes effect within the broker's memory-check interval, and then the
        # broker blocks the connection at its next publish; keep publishing until then
        start = time.monotonic()
        with pytest.raises(ConnectionBlocked, match="blocked"):
            while time.monotonic() - start < 30:
                app.send_task("faults.record", (0,), ignore_result=True)
        blocked_for = time.monotonic() - start
        assert blocked_for < 30, "publishing neither failed nor was blocked"
    finally:
        subprocess.run(
            ["rabbitmqctl", "set_vm_memory_high_watermark", "0.4"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        app.close()


def test_queue_deleted_under_the_worker_is_declared_and_consumed_again(
    names: tuple[str, str],
) -> None:
    from celeriac.testing import start_worker

    queue, _ = names
    app = Celery("redeclare", broker=AMQP, backend="memory://redeclare", set_as_current=False)
    app.conf.task_default_queue = queue

    @app.task
    def double(x: int) -> int:
        return 2 * x

    try:
        with start_worker(app, queues=[queue]) as worker:
            assert double.delay(1).get(timeout=10) == 2
            admin = app.connection()
            admin.connect()
            admin.delete_queue(queue)
            admin.close()
            deadline = time.monotonic() + 10
            while worker.consumer.reconnects == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert worker.consumer.reconnects >= 1
            # the client re-declares on its side too only once per connection: publish on a
            # fresh client so the queue exists whichever side declares first
            client = Celery("c2", broker=AMQP, backend="memory://redeclare", set_as_current=False)
            client.conf.task_default_queue = queue
            assert client.send_task(double.name, (21,)).get(timeout=10) == 42
            client.close()
    finally:
        app.close()


def test_long_task_in_solo_pool_keeps_the_connection_alive(names: tuple[str, str]) -> None:
    """A task three times the heartbeat interval long: heartbeats keep flowing meanwhile."""
    from celeriac.testing import start_worker

    queue, _ = names
    app = Celery("heartbeat", broker=AMQP, backend="memory://heartbeat", set_as_current=False)
    app.conf.task_default_queue = queue
    app.conf.broker_heartbeat = 2

    @app.task
    def nap(seconds: float) -> str:
        time.sleep(seconds)
        return "rested"

    try:
        with start_worker(app, queues=[queue]) as worker:
            transport = worker.consumer.transport
            assert transport is not None
            assert getattr(transport, "heartbeat", None) == 2
            assert nap.delay(7).get(timeout=30) == "rested"
            assert nap.delay(0).get(timeout=10) == "rested"
            assert worker.consumer.reconnects == 0
            assert worker.consumer.transport is transport
    finally:
        app.close()
