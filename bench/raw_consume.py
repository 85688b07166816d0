"""Raw AMQP consume rate: the same pre-published messages drained by each client library.

``python bench/raw_consume.py [-n 200000] [--size 200] [--prefetch 1000] [--ack-every 100]``

Every client consumes N messages of SIZE bytes from its own queue with the given prefetch and
acks with ``multiple=True`` every ACK_EVERY messages (and once at the end). The clock runs from
the first delivery to the final ack. Publishing is done beforehand with py-amqp, outside the
timing. Clients that are not installed are reported as such.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import uuid
from collections.abc import Callable

from celeriac.bench import raw

HOST, PORT = "127.0.0.1", 5672
URL = f"amqp://guest:guest@{HOST}:{PORT}//"


def publish_task_messages(queue: str, count: int, delivery_mode: int = 2) -> None:
    """What a worker really consumes: Celery v2 task messages on a durable queue (persistent
    unless ``delivery_mode`` is 1)."""
    raw.publish_task_messages(URL, queue, count, delivery_mode)


def publish(queue: str, count: int, size: int) -> None:
    import amqp

    body = b"x" * size
    with amqp.Connection(f"{HOST}:{PORT}", userid="guest", password="guest") as conn:
        ch = conn.channel()
        ch.queue_declare(queue, durable=False, auto_delete=False)
        msg = amqp.Message(body, content_type="application/octet-stream")
        for _ in range(count):
            ch.basic_publish(msg, exchange="", routing_key=queue)
        # wait until the broker has them all queued
        while ch.queue_declare(queue, passive=True).message_count < count:
            time.sleep(0.05)


def delete(queue: str) -> None:
    import amqp

    with amqp.Connection(f"{HOST}:{PORT}", userid="guest", password="guest") as conn:
        conn.channel().queue_delete(queue)


def _delete_exchange(name: str) -> None:
    import amqp

    with amqp.Connection(f"{HOST}:{PORT}", userid="guest", password="guest") as conn:
        conn.channel().exchange_delete(name)


def consume_pyamqp(queue: str, count: int, prefetch: int, ack_every: int) -> float:
    import amqp

    with amqp.Connection(f"{HOST}:{PORT}", userid="guest", password="guest") as conn:
        ch = conn.channel()
        ch.basic_qos(0, prefetch, False)
        state = {"n": 0, "start": 0.0}

        def on_message(msg: amqp.Message) -> None:
            state["n"] += 1
            if state["n"] == 1:
                state["start"] = time.perf_counter()
            if state["n"] % ack_every == 0 or state["n"] == count:
                ch.basic_ack(msg.delivery_tag, multiple=True)

        ch.basic_consume(queue, callback=on_message)
        while state["n"] < count:
            conn.drain_events(timeout=10)
        return time.perf_counter() - state["start"]


def consume_pika(queue: str, count: int, prefetch: int, ack_every: int) -> float:
    import pika

    conn = pika.BlockingConnection(pika.ConnectionParameters(HOST, PORT))
    ch = conn.channel()
    ch.basic_qos(prefetch_count=prefetch)
    start = 0.0
    for n, (method, _props, _body) in enumerate(ch.consume(queue, inactivity_timeout=10), 1):
        if n == 1:
            start = time.perf_counter()
        if n % ack_every == 0 or n == count:
            ch.basic_ack(method.delivery_tag, multiple=True)
        if n == count:
            break
    elapsed = time.perf_counter() - start
    ch.cancel()
    conn.close()
    return elapsed


def consume_librabbitmq(queue: str, count: int, prefetch: int, ack_every: int) -> float:
    import librabbitmq

    conn = librabbitmq.Connection(host=f"{HOST}:{PORT}", userid="guest", password="guest")
    ch = conn.channel()
    ch.basic_qos(0, prefetch, False)
    state = {"n": 0, "start": 0.0}

    def on_message(msg: object) -> None:
        state["n"] += 1
        if state["n"] == 1:
            state["start"] = time.perf_counter()
        if state["n"] % ack_every == 0 or state["n"] == count:
            ch.basic_ack(msg.delivery_info["delivery_tag"], multiple=True)  # type: ignore[attr-defined]

    ch.basic_consume(queue, callback=on_message)
    while state["n"] < count:
        conn.drain_events(timeout=10)
    elapsed = time.perf_counter() - state["start"]
    conn.close()
    return elapsed


def consume_celeriac(queue: str, count: int, prefetch: int, ack_every: int) -> float:
    return raw.consume(URL, queue, count, prefetch, ack_every)


CLIENTS: dict[str, Callable[[str, int, int, int], float]] = {
    "celeriac": consume_celeriac,
    "py-amqp": consume_pyamqp,
    "pika": consume_pika,
    "librabbitmq": consume_librabbitmq,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=200)
    parser.add_argument("--prefetch", type=int, default=1000)
    parser.add_argument("--ack-every", type=int, default=100)
    parser.add_argument("--clients", default=",".join(CLIENTS))
    parser.add_argument("--json", default=None)
    parser.add_argument(
        "--task-messages",
        action="store_true",
        help="consume persistent Celery task messages (what a worker sees) instead of "
        "transient SIZE-byte ones",
    )
    parser.add_argument(
        "--transient", action="store_true", help="with --task-messages: delivery_mode 1"
    )
    args = parser.parse_args()
    from celeriac._accel import SPEEDUPS

    results: dict[str, object] = {}
    for name in args.clients.split(","):
        queue = f"celeriac.bench.raw.{name}.{uuid.uuid4().hex[:8]}"
        try:
            if args.task_messages:
                publish_task_messages(queue, args.n, 1 if args.transient else 2)
            else:
                publish(queue, args.n, args.size)
            try:
                elapsed = CLIENTS[name](queue, args.n, args.prefetch, args.ack_every)
            except ImportError as exc:
                results[name] = f"not installed ({exc})"
                print(f"{name:12s} not installed")
                continue
            rate = args.n / elapsed
            results[name] = round(rate)
            print(f"{name:12s} {rate:10,.0f} msgs/s  ({elapsed:.2f}s)", flush=True)
        finally:
            delete(queue)
            if args.task_messages:
                _delete_exchange(queue)
    info = {
        "n": args.n,
        "size": args.size,
        "prefetch": args.prefetch,
        "ack_every": args.ack_every,
        "speedups": SPEEDUPS,
        "python": platform.python_version(),
        "cores": os.cpu_count(),
        "rates": results,
    }
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(info, fh, indent=2)


if __name__ == "__main__":
    main()
