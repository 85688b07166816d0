"""The broker's own limit: the run's task messages published and consumed with celeriac's
bare AMQP client (no task framework), timed the same way as the worker's drain."""

from __future__ import annotations

import contextlib
import time
from typing import Any

from celeriac.bench.cleanup import deferred_sigint, delete_queues
from celeriac.bench.config import BenchOptions
from celeriac.bench.phases import Report

__all__ = ["consume", "publish_raw", "publish_task_messages", "run_raw"]


def _declare(transport: Any, queue: str) -> None:
    # what a celeriac or Celery client declares for a task queue
    transport.declare_exchange(queue, "direct", durable=True)
    transport.declare_queue(queue, durable=True)
    transport.bind_queue(queue, queue, queue)


def _wait_queued(transport: Any, queue: str, count: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while transport.declare_queue(queue, passive=True).message_count < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"queue {queue} did not get its {count} messages")
        time.sleep(0.01)


def publish_task_messages(url: str, queue: str, count: int, delivery_mode: int = 2) -> None:
    """What a worker really consumes: Celery v2 task messages (no-op tasks) on a durable
    queue, sent by celeriac's client (persistent unless ``delivery_mode`` is 1)."""
    from celeriac import Celery

    app = Celery("raw-bench", broker=url, set_as_current=False)
    app.conf.task_default_delivery_mode = delivery_mode
    try:
        for _ in range(count):
            app.send_task("celeriac.bench.noop", queue=queue, ignore_result=True)
        _wait_queued(app.producer_transport(), queue, count)
    finally:
        app.close()


def publish_raw(
    url: str, queue: str, opts: BenchOptions, count: int, report: Report | None = None
) -> float:
    """Publish ``count`` copies of one task message of the run (same task, payload and
    properties) with the bare transport; return the seconds the publishing took."""
    from celeriac import protocol
    from celeriac.transports.registry import transport_for_url

    name, args = opts.task.call(opts.payload)
    message = protocol.build_task_message(
        name, protocol.new_task_id(), args, {}, ignore_result=True
    )
    body, headers, properties = message.body, message.headers, message.properties
    transport = transport_for_url(url, heartbeat=0)
    transport.connect()
    try:
        _declare(transport, queue)
        publish = transport.publish
        step = max(1, min(500, count // 100))
        start = time.perf_counter()
        for i in range(1, count + 1):
            publish(body, "", queue, headers, properties)
            if report is not None and i % step == 0:
                report("raw publish", i, count)
        elapsed = time.perf_counter() - start
        _wait_queued(transport, queue, count)
        return elapsed
    finally:
        transport.close()


def consume(
    url: str,
    queue: str,
    count: int,
    prefetch: int,
    ack_every: int,
    report: Report | None = None,
) -> float:
    """Consume ``count`` messages with ``basic.ack(multiple=True)`` every ``ack_every``;
    return the seconds from the first delivery to the last ack."""
    from celeriac.transports.registry import transport_for_url

    transport = transport_for_url(url, heartbeat=0)
    transport.connect()
    transport.qos(prefetch)
    state = {"n": 0, "start": 0.0}
    ack = transport.ack
    step = max(1, min(1000, count // 100))

    def on_message(delivery: Any) -> None:
        n = state["n"] = state["n"] + 1
        if n == 1:
            state["start"] = time.perf_counter()
        if n % ack_every == 0 or n == count:
            ack(delivery.delivery_tag, True)
        if report is not None and n % step == 0:
            report("raw consume", int(n), count)

    try:
        transport.consume(queue, on_message)
        while state["n"] < count:
            transport.drain_events(10)
        return time.perf_counter() - state["start"]
    finally:
        with contextlib.suppress(Exception):
            transport.close()


def run_raw(opts: BenchOptions, report: Report, drain_rate: float | None) -> dict[str, Any]:
    """Publish and consume the run's messages bare, on a queue of its own (removed after).

    The consumer gets the worker's prefetch count (``-c`` x ``--prefetch-multiplier``) and
    acks half a prefetch window at a time.
    """
    queue = f"{opts.queue}.raw"
    prefetch = opts.prefetch_multiplier * opts.workers
    ack_every = max(1, prefetch // 2) if prefetch else 100
    raw: dict[str, Any] = {"queue": queue, "prefetch": prefetch, "ack_every": ack_every}
    try:
        seconds = publish_raw(opts.broker, queue, opts, opts.tasks, report)
        raw["publish_rate"] = opts.tasks / seconds
        seconds = consume(opts.broker, queue, opts.tasks, prefetch, ack_every, report)
        raw["consume_rate"] = opts.tasks / seconds
        if drain_rate:
            raw["drain_pct"] = 100.0 * drain_rate / raw["consume_rate"]
    finally:
        with deferred_sigint():
            raw["notes"] = delete_queues(opts.broker, [queue], [queue])
    return raw
