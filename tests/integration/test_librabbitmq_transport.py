"""The optional librabbitmq:// transport against the real RabbitMQ."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

pytest.importorskip(
    "librabbitmq", reason="librabbitmq is optional (pip install celeriac[librabbitmq])"
)

from celeriac import Celery
from celeriac.testing import start_worker
from celeriac.transports.base import Delivery
from celeriac.transports.librabbitmq import LibRabbitMQTransport

pytestmark = pytest.mark.integration
URL = "librabbitmq://guest:guest@127.0.0.1:5672//"


@pytest.fixture
def transport() -> Iterator[LibRabbitMQTransport]:
    t = LibRabbitMQTransport(URL)
    t.connect()
    yield t
    t.close()


@pytest.fixture
def queue(transport: LibRabbitMQTransport) -> Iterator[str]:
    name = f"celeriac.test.lrmq.{uuid.uuid4().hex[:10]}"
    transport.declare_queue(name, durable=False, auto_delete=False)
    yield name
    cleanup = LibRabbitMQTransport(URL)
    cleanup.connect()
    cleanup.delete_queue(name)
    cleanup.close()


def test_publish_get_with_celery_headers(transport: LibRabbitMQTransport, queue: str) -> None:
    headers = {
        "task": "t",
        "id": "1",
        "retries": 0,
        "timelimit": [None, 5.5],
        "ignore_result": False,
        "stamps": {},
    }
    transport.publish(
        b"body", "", queue, headers, {"content_type": "application/json", "correlation_id": "1"}
    )
    delivery = transport.get(queue, no_ack=True)
    assert delivery is not None
    assert delivery.body == b"body"
    assert delivery.headers == headers
    assert delivery.properties["correlation_id"] == "1"
    assert delivery.delivery_info["routing_key"] == queue


def test_consume_prefetch_ack_multiple_and_requeue(
    transport: LibRabbitMQTransport, queue: str
) -> None:
    for i in range(10):
        transport.publish(str(i).encode(), "", queue)
    transport.qos(3)
    got: list[Delivery] = []
    transport.consume(queue, got.append)
    while len(got) < 3:
        transport.drain_events(1)
    transport.drain_events(0.2)
    assert len(got) == 3  # prefetch holds the rest back
    transport.reject(got[0].delivery_tag, requeue=True)
    transport.ack(got[2].delivery_tag, multiple=True)
    while len(got) < 11:
        assert transport.drain_events(2) or len(got) >= 11
        transport.ack(got[-1].delivery_tag, multiple=True)
    bodies = sorted(int(d.body) for d in got if not d.delivery_info["redelivered"])
    assert bodies == list(range(10))
    assert any(d.delivery_info["redelivered"] for d in got)


def test_worker_runs_on_librabbitmq() -> None:
    name = uuid.uuid4().hex[:8]
    app = Celery(f"lr{name}", broker=URL, backend=f"memory://{name}")
    queue = f"celeriac.test.lrmq.worker.{name}"
    app.conf.task_default_queue = queue

    @app.task
    def mul(x: int, y: int) -> int:
        return x * y

    try:
        with start_worker(app, queues=[queue]):
            results = [mul.delay(i, 3) for i in range(200)]
            assert [r.get(timeout=20) for r in results] == [i * 3 for i in range(200)]
    finally:
        t = LibRabbitMQTransport(URL)
        t.connect()
        t.delete_queue(queue)
        t.delete_exchange(queue)
        t.close()
        app.close()
