"""A worker process (``celery worker`` or ``celeriac worker``) running the sample Celery
project, a Celery client for it, and the Redis ledger its tasks write to."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

__all__ = ["AMQP", "BACKEND", "REDIS_BROKER", "Run"]

ROOT = Path(__file__).resolve().parents[2]
# pyamqp://, not amqp://: with librabbitmq importable kombu would pick it for amqp://
AMQP = os.environ.get("CELERIAC_TEST_AMQP", "pyamqp://guest:guest@127.0.0.1:5672//")
REDIS_BROKER = "redis://127.0.0.1:6379/13"
BACKEND = "redis://127.0.0.1:6379/15"
PROJECT = "tests.compat.celery_project"


class Run:
    """One worker process of one kind on one broker, and a client to talk to it."""

    def __init__(
        self,
        kind: str,
        broker: str,
        pool: str,
        concurrency: int = 2,
        uid: str | None = None,
        extra: tuple[str, ...] = (),
    ) -> None:
        import celery
        import redis

        from tests.compat.celery_project.celery import configure

        uid = uid or uuid.uuid4().hex[:10]
        self.concurrency = concurrency
        self.extra = extra
        self.uid = uid
        self.kind = kind
        self.pool = pool
        self.broker_kind = broker
        self.broker = AMQP if broker == "amqp" else REDIS_BROKER
        self.queue = f"celeriac.test.cp.{uid}"
        self.prefix = f"celeriac.test.cp.{uid}"
        self.nodename = f"cp-{kind}-{uid}@{socket.gethostname()}"
        self.ledger = redis.Redis.from_url(BACKEND, decode_responses=True)
        self.client: Any = celery.Celery(f"client-{uid}", set_as_current=False)
        configure(self.client, queue=self.queue, broker=self.broker, backend=BACKEND)
        self.proc: subprocess.Popen[bytes] | None = None
        self.output = ""

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            self.kind,
            "-A",
            PROJECT,
            "worker",
            "-P",
            self.pool,
            "-c",
            str(self.concurrency),
            "-X",
            f"{self.queue}.excluded",
            "-n",
            f"cp-{self.kind}-{self.uid}@%h",
            "--without-gossip",
            "--without-mingle",
            *(() if "-E" in self.extra else ("--without-heartbeat",)),
            "-l",
            "warning",
            *self.extra,
        ]

    def start(self) -> None:
        env = {
            **os.environ,
            "CP_PREFIX": self.prefix,
            "CP_QUEUE": self.queue,
            "CP_BROKER": self.broker,
            "CP_BACKEND": BACKEND,
            "CP_LEDGER": BACKEND,
            "CP_WORKER": self.kind,
        }
        self.proc = subprocess.Popen(
            self.command(), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 60
        while not self.ledger.hget(self.key("worker_ready"), self.kind):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"{self.kind} worker did not start:\n{self.output}")
            time.sleep(0.1)

    def stop(self) -> int:
        proc = self.proc
        if proc is None:
            return 0
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        self.output = out.decode(errors="replace")
        return int(proc.returncode)

    def key(self, *parts: object) -> str:
        return ":".join([self.prefix, *(str(p) for p in parts)])

    def hash(self, *parts: object) -> dict[str, str]:
        return dict(self.ledger.hgetall(self.key(*parts)))

    def runs(self, tag: str) -> int:
        return int(self.ledger.hget(self.key("runs", tag), "n") or 0)

    def send(self, name: str, *args: Any, **options: Any) -> Any:
        return self.client.send_task(name, args, **options)

    def sig(self, name: str, *args: Any, **options: Any) -> Any:
        return self.client.signature(name, args=args, **options)

    def messages_in(self, queue: str) -> int:
        if self.broker_kind == "redis":
            import redis

            return int(redis.Redis.from_url(REDIS_BROKER).llen(queue))
        import amqp

        with amqp.Connection("127.0.0.1:5672", userid="guest", password="guest") as conn:
            return int(conn.channel().queue_declare(queue, passive=True).message_count)

    def cleanup(self) -> None:
        self.client.close()
        for key in self.ledger.scan_iter(f"{self.prefix}:*"):
            self.ledger.delete(key)
        names = [self.queue, f"{self.queue}.routed", f"{self.queue}.excluded"]
        if self.broker_kind == "redis":
            import redis

            broker = redis.Redis.from_url(REDIS_BROKER)
            for pattern in (f"{self.queue}*", f"_kombu.binding.{self.queue}*"):
                for key in broker.scan_iter(pattern):
                    broker.delete(key)
            return
        import amqp

        with amqp.Connection("127.0.0.1:5672", userid="guest", password="guest") as conn:
            channel = conn.channel()
            for name in names:
                channel.queue_delete(name)
            for name in (self.queue, f"{self.queue}.topic", f"{self.queue}.excluded"):
                channel.exchange_delete(name)
