"""``filenos()`` of the network transports (amqp://, librabbitmq://) against RabbitMQ."""

from __future__ import annotations

import select
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from celeriac.transports.amqp import AMQPTransport
from celeriac.transports.base import Delivery
from celeriac.transports.librabbitmq import LibRabbitMQTransport

Factory = Callable[[], Any]


@pytest.fixture(params=["amqp", "librabbitmq"])
def make(request: pytest.FixtureRequest, amqp_url: str) -> Iterator[Factory]:
    made: list[Any] = []

    def factory() -> Any:
        if request.param == "amqp":
            t: Any = AMQPTransport(amqp_url)
        else:
            t = LibRabbitMQTransport("lib" + amqp_url.replace("amqp://", "rabbitmq://", 1))
        t.connect()
        made.append(t)
        return t

    yield factory
    for t in made:
        t.close()


@pytest.fixture
def queue(make: Factory) -> Iterator[str]:
    name = f"celeriac.test.filenos.{uuid.uuid4().hex[:12]}"
    make().declare_queue(name, durable=False)
    yield name
    make().delete_queue(name)


def consume(t: Any, queue: str) -> list[Delivery]:
    got: list[Delivery] = []

    def on_delivery(delivery: Delivery) -> None:
        got.append(delivery)
        t.ack(delivery.delivery_tag)

    t.consume(queue, on_delivery)
    return got


def readable(fds: tuple[int, ...], timeout: float = 0.0) -> list[int]:
    return list(select.select(fds, [], [], timeout)[0])


def settle(t: Any, fds: tuple[int, ...], timeout: float = 0.3) -> None:
    """Drain until nothing is readable for ``timeout`` (start-up answers, spurious wakes)."""
    while readable(fds, timeout):
        t.drain_events(0)


def test_delivery_from_the_broker_wakes_select(make: Factory, queue: str) -> None:
    t = make()
    got = consume(t, queue)
    fds = t.filenos()
    assert len(fds) == 2
    settle(t, fds)
    start = time.monotonic()
    assert t.drain_events(0) == 0
    assert time.monotonic() - start < 0.05
    producer = make()
    timer = threading.Timer(0.1, lambda: [producer.publish(b"m", "", queue) for _ in range(20)])
    timer.start()
    deadline = time.monotonic() + 10
    while len(got) < 20 and time.monotonic() < deadline:
        if readable(fds, 1.0):
            t.drain_events(0)
    timer.join()
    assert len(got) == 20
    # all dispatched: nothing stays readable, so the loop does not spin
    rounds = 0
    while readable(fds, 0.2):
        assert t.drain_events(0) == 0
        rounds += 1
        assert rounds < 3, "still readable after everything was dispatched"


def test_wakeup_from_another_thread(make: Factory, queue: str) -> None:
    t = make()
    consume(t, queue)
    fds = t.filenos()
    settle(t, fds)
    threading.Timer(0.1, t.wakeup).start()
    assert readable(fds, 5.0)
    assert t.drain_events(0) == 0
    assert readable(fds) == []


def test_deliveries_read_by_a_publishing_thread_wake_the_loop(amqp_url: str, queue: str) -> None:
    t = AMQPTransport(amqp_url)
    t.connect()
    try:
        got = consume(t, queue)
        fds = t.filenos()
        settle(t, fds)
        producer = AMQPTransport(amqp_url)
        with producer:
            producer.publish(b"m", "", queue)
        deadline = time.monotonic() + 5
        while not t._conn.readable() and time.monotonic() < deadline:  # type: ignore[union-attr]
            time.sleep(0.01)
        # a publish reads what already arrived (the delivery) off the socket, in its thread
        worker = threading.Thread(target=t.publish, args=(b"x", "", f"{queue}.none"))
        worker.start()
        worker.join()
        assert len(t._pending) == 1
        assert readable(fds, 1.0)
        assert t.drain_events(0) == 1
        assert [d.body for d in got] == [b"m"]
        assert readable(fds) == []
    finally:
        t.close()


def test_not_connected_has_no_descriptors(amqp_url: str) -> None:
    t = AMQPTransport(amqp_url)
    assert t.filenos() == ()
    t.connect()
    assert len(t.filenos()) == 2
    t.close()
    assert t.filenos() == ()
