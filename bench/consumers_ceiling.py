"""Is the broker's limit per consumer or per queue? K consumer processes drain one queue.

``python bench/consumers_ceiling.py [-n 100000] [--runs 1:256,2:128,4:64]``

Each run pre-publishes N persistent Celery task messages to a fresh queue, then starts K
processes, each with its own connection and the given prefetch, acking multiple every 64.
The clock runs from the first delivery in any process to the last ack. If the total stays
flat as K grows, the queue (one Erlang process in RabbitMQ) is the limit, and no worker
design that consumes one queue gets past it.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
import uuid
from typing import Any

from celeriac.bench import raw

URL = "amqp://guest:guest@127.0.0.1:5672//"
ACK_EVERY = 64


def _consume(queue: str, prefetch: int, stop: Any, acked: Any, first: Any) -> None:
    from celeriac.transports.registry import transport_for_url

    transport = transport_for_url(URL)
    transport.connect()
    transport.qos(prefetch)
    seen = 0

    def on_message(delivery: Any) -> None:
        nonlocal seen
        seen += 1
        if seen == 1:
            with first.get_lock():
                if not first.value:
                    first.value = time.perf_counter()
        if seen % ACK_EVERY == 0:
            transport.ack(delivery.delivery_tag, True)
            with acked.get_lock():
                acked.value += ACK_EVERY

    transport.consume(queue, on_message)
    while not stop.is_set():
        transport.drain_events(0.1)
    transport.close()


def run(count: int, consumers: int, prefetch: int) -> float:
    queue = f"celeriac.bench.ceiling.{uuid.uuid4().hex[:8]}"
    raw.publish_task_messages(URL, queue, count)
    stop, acked, first = mp.Event(), mp.Value("q", 0), mp.Value("d", 0.0)
    procs = [
        mp.Process(target=_consume, args=(queue, prefetch, stop, acked, first))
        for _ in range(consumers)
    ]
    for proc in procs:
        proc.start()
    # each process may hold back up to ACK_EVERY - 1 unacked at the end
    target = count - consumers * ACK_EVERY
    while acked.value < target:
        time.sleep(0.002)
    rate = acked.value / (time.perf_counter() - first.value)
    stop.set()
    for proc in procs:
        proc.join()
    from celeriac.transports.registry import transport_for_url

    transport = transport_for_url(URL)
    transport.connect()
    try:
        transport.delete_queue(queue)
    finally:
        transport.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=100_000)
    parser.add_argument("--runs", default="1:256,2:128,4:64,1:256")
    args = parser.parse_args()
    for spec in args.runs.split(","):
        consumers, prefetch = (int(x) for x in spec.split(":"))
        rate = run(args.n, consumers, prefetch)
        print(f"{consumers} consumer(s) x prefetch {prefetch}: {rate:,.0f} msgs/s", flush=True)


if __name__ == "__main__":
    main()
