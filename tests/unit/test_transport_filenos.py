"""The memory transport's ``filenos()``: readable exactly when ``drain_events(0)`` has work."""

from __future__ import annotations

import select
import threading
import time
from collections.abc import Iterator

import pytest

from celeriac.transports.base import Delivery
from celeriac.transports.memory import MemoryBroker, MemoryTransport


@pytest.fixture(autouse=True)
def _clean_broker() -> Iterator[None]:
    MemoryBroker.reset_all()
    yield
    MemoryBroker.reset_all()


@pytest.fixture
def consumer() -> Iterator[tuple[MemoryTransport, list[Delivery]]]:
    got: list[Delivery] = []
    with MemoryTransport("memory://filenos") as t:
        t.declare_queue("q")
        t.qos(10)

        def on_delivery(delivery: Delivery) -> None:
            got.append(delivery)
            t.ack(delivery.delivery_tag)

        t.consume("q", on_delivery)
        yield t, got


def readable(fds: tuple[int, ...], timeout: float = 0.0) -> list[int]:
    return list(select.select(fds, [], [], timeout)[0])


def test_not_connected_has_no_descriptors() -> None:
    assert MemoryTransport("memory://filenos").filenos() == ()


def test_idle_is_not_readable_and_drain_does_not_block(
    consumer: tuple[MemoryTransport, list[Delivery]],
) -> None:
    t, _ = consumer
    fds = t.filenos()
    assert len(fds) == 1
    assert readable(fds) == []
    start = time.monotonic()
    assert t.drain_events(0) == 0
    assert time.monotonic() - start < 0.05


def test_publish_from_another_connection_and_thread_wakes_select(
    consumer: tuple[MemoryTransport, list[Delivery]],
) -> None:
    t, got = consumer
    fds = t.filenos()
    with MemoryTransport("memory://filenos") as producer:
        timer = threading.Timer(0.1, producer.publish, (b"hello", "", "q"))
        timer.start()
        start = time.monotonic()
        assert readable(fds, 5.0) == list(fds)
        assert time.monotonic() - start < 2.0
        timer.join()
    assert t.drain_events(0) == 1
    assert [d.body for d in got] == [b"hello"]
    assert readable(fds) == []


def test_many_deliveries_drain_then_quiet(
    consumer: tuple[MemoryTransport, list[Delivery]],
) -> None:
    t, got = consumer
    fds = t.filenos()
    for i in range(25):  # more than the prefetch: acks release the rest
        t.publish(str(i).encode(), "", "q")
    rounds = 0
    while readable(fds):
        t.drain_events(0)
        rounds += 1
        assert rounds < 100, "the descriptor stays readable: a busy loop"
    assert len(got) == 25
    assert t.drain_events(0) == 0


def test_wakeup_makes_it_readable_once(consumer: tuple[MemoryTransport, list[Delivery]]) -> None:
    t, _ = consumer
    fds = t.filenos()
    threading.Thread(target=t.wakeup).start()
    assert readable(fds, 5.0) == list(fds)
    assert t.drain_events(0) == 0
    assert readable(fds) == []


def test_callback_that_raises_leaves_it_readable() -> None:
    with MemoryTransport("memory://filenos") as t:
        t.declare_queue("q")

        def boom(delivery: Delivery) -> None:
            raise RuntimeError("boom")

        t.consume("q", boom, no_ack=True)
        fds = t.filenos()
        t.publish(b"a", "", "q")
        t.publish(b"b", "", "q")
        with pytest.raises(RuntimeError):
            t.drain_events(0)
        assert readable(fds) == list(fds)


def test_same_pipe_across_channel_reopen_and_closed_after_close() -> None:
    t = MemoryTransport("memory://filenos")
    t.connect()
    t.declare_queue("q")
    fds = t.filenos()
    with pytest.raises(Exception):  # noqa: B017 - any channel error closes the channel
        t.declare_queue("missing", passive=True)
    assert readable(fds) == list(fds)  # the loop learns of the close from drain_events
    t.connect()
    assert t.filenos() == fds
    assert readable(fds) == []
    t.close()
    assert t.filenos() == ()
