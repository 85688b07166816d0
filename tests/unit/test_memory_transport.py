"""Tests for the embedded memory:// broker and the transport registry."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from celeriac.errors import ChannelError, ConfigurationError, ConnectionError
from celeriac.transports.base import Delivery, Transport
from celeriac.transports.memory import MemoryBroker, MemoryTransport, vhost_from_url
from celeriac.transports.registry import (
    known_schemes,
    register_transport,
    split_urls,
    transport_for_url,
)


@pytest.fixture(autouse=True)
def _clean_broker() -> Iterator[None]:
    MemoryBroker.reset_all()
    yield
    MemoryBroker.reset_all()


@pytest.fixture
def conn() -> Iterator[MemoryTransport]:
    with MemoryTransport() as t:
        yield t


class Inbox:
    """A delivery callback that keeps what it gets."""

    def __init__(self) -> None:
        self.got: list[Delivery] = []

    def __call__(self, delivery: Delivery) -> None:
        self.got.append(delivery)

    @property
    def bodies(self) -> list[bytes]:
        return [d.body for d in self.got]


def drain_all(t: MemoryTransport) -> int:
    total = 0
    while n := t.drain_events(timeout=0):
        total += n
    return total


def bodies_in(t: MemoryTransport, queue: str) -> list[bytes]:
    out = []
    while (d := t.get(queue, no_ack=True)) is not None:
        out.append(d.body)
    return out


# -- connection and URLs -----------------------------------------------------------------------


def test_implements_the_transport_protocol() -> None:
    t: Transport = MemoryTransport()
    assert isinstance(t, Transport)
    assert not t.connected
    with pytest.raises(ConnectionError, match="not connected"):
        t.publish(b"x", "", "q")
    t.connect()
    t.connect()
    assert t.connected
    t.close()
    t.close()
    assert not t.connected


@pytest.mark.parametrize(
    ("url", "vhost"),
    [
        ("memory://", "/"),
        ("memory:///", "/"),
        ("memory://localhost/", "/"),
        ("memory://other", "other"),
        ("memory:///other", "other"),
        ("memory://localhost/other", "other"),
    ],
)
def test_vhost_from_url(url: str, vhost: str) -> None:
    assert vhost_from_url(url) == vhost


def test_url_selects_the_virtual_host() -> None:
    with (
        MemoryTransport("memory://") as a,
        MemoryTransport("memory:///") as b,
        MemoryTransport("memory://other") as c,
    ):
        a.declare_queue("q")
        a.publish(b"hello", "", "q")
        assert b.get("q") is not None
        with pytest.raises(ChannelError, match="NOT_FOUND"):
            c.declare_queue("q", passive=True)
    assert MemoryBroker.get("") is MemoryBroker.get("/")
    assert MemoryBroker.get("other") is not MemoryBroker.get("/")


# -- routing -----------------------------------------------------------------------------------


def test_default_exchange_routes_by_queue_name(conn: MemoryTransport) -> None:
    conn.declare_queue("a")
    conn.declare_queue("b")
    conn.publish(b"1", "", "a")
    conn.publish(b"2", "", "b")
    conn.publish(b"lost", "", "nowhere")
    assert bodies_in(conn, "a") == [b"1"]
    assert bodies_in(conn, "b") == [b"2"]


def test_unroutable_is_dropped_or_raises_when_mandatory(conn: MemoryTransport) -> None:
    conn.declare_exchange("ex", "direct")
    conn.publish(b"x", "ex", "nobody")
    with pytest.raises(ChannelError, match="NO_ROUTE"):
        conn.publish(b"x", "ex", "nobody", mandatory=True)
    assert conn.connected  # basic.return does not close the channel


def test_direct_exchange(conn: MemoryTransport) -> None:
    conn.declare_exchange("tasks", "direct")
    for q in ("a", "b", "c"):
        conn.declare_queue(q)
    conn.bind_queue("a", "tasks", "red")
    conn.bind_queue("b", "tasks", "red")
    conn.bind_queue("c", "tasks", "blue")
    conn.bind_queue("c", "tasks", "blue")  # the same binding twice is one binding
    conn.publish(b"r", "tasks", "red")
    conn.publish(b"b", "tasks", "blue")
    conn.publish(b"g", "tasks", "green")
    assert (bodies_in(conn, "a"), bodies_in(conn, "b"), bodies_in(conn, "c")) == (
        [b"r"],
        [b"r"],
        [b"b"],
    )
    conn.unbind_queue("a", "tasks", "red")
    conn.publish(b"r2", "tasks", "red")
    assert (bodies_in(conn, "a"), bodies_in(conn, "b")) == ([], [b"r2"])


@pytest.mark.parametrize(
    ("pattern", "key", "matches"),
    [
        ("*.orange.*", "quick.orange.rabbit", True),
        ("*.orange.*", "quick.orange.male.rabbit", False),
        ("*.*.rabbit", "quick.orange.rabbit", True),
        ("lazy.#", "lazy", True),
        ("lazy.#", "lazy.orange.male.rabbit", True),
        ("lazy.#", "lazyx", False),
        ("#", "", True),
        ("#", "any.thing", True),
        ("*", "", False),
        ("*", "one", True),
        ("*", "one.two", False),
        ("a.#.b", "a.b", True),
        ("a.#.b", "a.x.y.b", True),
        ("a.#.b", "a.x.y.c", False),
        ("a.*.b", "a.b", False),
        ("#.b", "b", True),
        ("#.b.#", "x.b.y.z", True),
        ("a.b", "a.b", True),
        ("a.b", "a.b.c", False),
    ],
)
def test_topic_exchange(conn: MemoryTransport, pattern: str, key: str, matches: bool) -> None:
    conn.declare_exchange("events", "topic")
    conn.declare_queue("q")
    conn.bind_queue("q", "events", pattern)
    conn.publish(b"e", "events", key)
    conn.publish(b"e", "events", key)  # second time through the routing cache
    assert len(bodies_in(conn, "q")) == (2 if matches else 0)


def test_topic_exchange_delivers_once_per_queue(conn: MemoryTransport) -> None:
    conn.declare_exchange("events", "topic")
    conn.declare_queue("q")
    conn.bind_queue("q", "events", "task.#")
    conn.bind_queue("q", "events", "*.succeeded")
    conn.publish(b"e", "events", "task.succeeded")
    assert bodies_in(conn, "q") == [b"e"]


def test_fanout_exchange(conn: MemoryTransport) -> None:
    conn.declare_exchange("broadcast", "fanout")
    for q in ("a", "b"):
        conn.declare_queue(q)
        conn.bind_queue(q, "broadcast", "ignored")
    conn.publish(b"hi", "broadcast", "whatever")
    assert bodies_in(conn, "a") == bodies_in(conn, "b") == [b"hi"]


def test_headers_exchange(conn: MemoryTransport) -> None:
    conn.declare_exchange("h", "headers")
    conn.declare_queue("all")
    conn.declare_queue("any")
    conn.bind_queue("all", "h", "", {"x-match": "all", "a": 1, "b": 2})
    conn.bind_queue("any", "h", "", {"x-match": "any", "a": 1, "b": 2})
    conn.publish(b"both", "h", "", headers={"a": 1, "b": 2})
    conn.publish(b"one", "h", "", headers={"a": 1})
    conn.publish(b"none", "h", "", headers={"c": 3})
    assert bodies_in(conn, "all") == [b"both"]
    assert bodies_in(conn, "any") == [b"both", b"one"]


# -- declarations and channel errors -----------------------------------------------------------


def test_redeclare_exchange_with_other_type_closes_the_channel(conn: MemoryTransport) -> None:
    conn.declare_exchange("ex", "direct")
    conn.declare_exchange("ex", "direct")
    with pytest.raises(ChannelError, match=r"inequivalent arg 'type'.*PRECONDITION_FAILED"):
        conn.declare_exchange("ex", "topic")
    assert not conn.connected
    with pytest.raises(ChannelError, match="closed the channel"):
        conn.declare_queue("q")
    conn.connect()
    with pytest.raises(ChannelError, match="'durable'"):
        conn.declare_exchange("ex", "direct", durable=False)


def test_reserved_and_invalid_exchanges(conn: MemoryTransport) -> None:
    with pytest.raises(ChannelError, match="ACCESS_REFUSED"):
        conn.declare_exchange("")
    conn.connect()
    with pytest.raises(ChannelError, match="unknown type 'x-nope'"):
        conn.declare_exchange("ex", "x-nope")
    conn.connect()
    conn.declare_exchange("amq.topic", "topic")  # an equivalent redeclare is fine


def test_publish_to_unknown_exchange(conn: MemoryTransport) -> None:
    with pytest.raises(ChannelError, match=r"no exchange 'missing'.*404 NOT_FOUND"):
        conn.publish(b"x", "missing", "rk")
    assert not conn.connected


def test_passive_declare(conn: MemoryTransport) -> None:
    with pytest.raises(ChannelError) as info:
        conn.declare_queue("missing", passive=True)
    assert str(info.value) == "no queue 'missing' in vhost '/' (404 NOT_FOUND)"
    conn.connect()
    conn.declare_queue("q")
    conn.publish(b"1", "", "q")
    conn.consume("q", Inbox())
    conn.publish(b"2", "", "q")
    info2 = conn.declare_queue("q", passive=True)
    # A consumer without prefetch takes both at once, so none wait in the queue.
    assert (info2.name, info2.message_count, info2.consumer_count) == ("q", 0, 1)


def test_redeclare_queue_with_other_arguments(conn: MemoryTransport) -> None:
    conn.declare_queue("q", arguments={"x-max-priority": 10})
    assert conn.declare_queue("q", arguments={"x-max-priority": 10}).name == "q"
    with pytest.raises(ChannelError, match="inequivalent arg 'x-max-priority'"):
        conn.declare_queue("q")


def test_server_named_queue_and_invalid_arguments(conn: MemoryTransport) -> None:
    info = conn.declare_queue("", exclusive=True)
    assert info.name.startswith("amq.gen-")
    with pytest.raises(ChannelError, match="invalid arg 'x-max-priority'"):
        conn.declare_queue("p", arguments={"x-max-priority": 1000})


def test_purge_and_delete(conn: MemoryTransport) -> None:
    conn.declare_queue("q")
    for _ in range(3):
        conn.publish(b"x", "", "q")
    assert conn.purge_queue("q") == 3
    conn.publish(b"x", "", "q")
    with pytest.raises(ChannelError, match="not empty"):
        conn.delete_queue("q", if_empty=True)
    conn.connect()
    conn.consume("q", Inbox())
    with pytest.raises(ChannelError, match="has consumers"):
        conn.delete_queue("q", if_unused=True)
    conn.connect()
    conn.publish(b"y", "", "q")
    assert conn.delete_queue("q") == 2  # the consumer died with the old channel
    assert conn.delete_queue("q") == 0
    assert "q" not in MemoryBroker.get().queue_names()


def test_exclusive_queue_is_locked_to_its_connection_and_dies_with_it() -> None:
    with MemoryTransport() as owner, MemoryTransport() as other:
        owner.declare_queue("mine", exclusive=True)
        with pytest.raises(ChannelError, match="RESOURCE_LOCKED"):
            other.consume("mine", Inbox())
        other.connect()
        other.publish(b"x", "", "mine")  # publishing to it is allowed
        assert owner.get("mine") is not None
        owner.close()
        with pytest.raises(ChannelError, match="NOT_FOUND"):
            other.declare_queue("mine", passive=True)


def test_auto_delete_queue_goes_with_its_last_consumer(conn: MemoryTransport) -> None:
    conn.declare_queue("tmp", auto_delete=True)
    a = conn.consume("tmp", Inbox())
    b = conn.consume("tmp", Inbox())
    conn.cancel(a)
    assert "tmp" in MemoryBroker.get().queue_names()
    conn.cancel(b)
    assert "tmp" not in MemoryBroker.get().queue_names()


# -- consuming ---------------------------------------------------------------------------------


def test_deliveries_carry_info_and_per_connection_tags() -> None:
    with MemoryTransport() as a, MemoryTransport() as b:
        a.declare_exchange("ex", "direct")
        a.declare_queue("qa")
        a.declare_queue("qb")
        a.bind_queue("qa", "ex", "ka")
        inbox_a, inbox_b = Inbox(), Inbox()
        tag = a.consume("qa", inbox_a, consumer_tag="worker-1")
        b.consume("qb", inbox_b)
        for i in range(3):
            a.publish(b"a%d" % i, "ex", "ka", headers={"id": i}, properties={"priority": 0})
            a.publish(b"b%d" % i, "", "qb")
        assert drain_all(a) == 3
        assert drain_all(b) == 3
        assert [d.delivery_tag for d in inbox_a.got] == [1, 2, 3]
        assert [d.delivery_tag for d in inbox_b.got] == [1, 2, 3]
        first = inbox_a.got[0]
        assert tag == "worker-1"
        assert first.delivery_info == {
            "exchange": "ex",
            "routing_key": "ka",
            "redelivered": False,
            "consumer_tag": "worker-1",
        }
        assert first.headers == {"id": 0}
        assert first.properties == {"priority": 0}
        assert inbox_b.got[0].headers is None


def test_headers_and_properties_are_copied_per_delivery(conn: MemoryTransport) -> None:
    conn.declare_queue("q")
    headers: dict[str, Any] = {"task": "t", "timelimit": [None, None], "stamps": {"a": 1}}
    conn.publish(b"x", "", "q", headers=headers, properties={"content_type": "json"})
    headers["task"] = "changed by the publisher"
    first = conn.get("q")
    assert first is not None and first.headers is not None
    first.headers["task"] = "mutated"
    first.headers["timelimit"][0] = 5
    first.headers["stamps"]["a"] = 2
    first.properties["content_type"] = "mutated"
    conn.reject(first.delivery_tag, requeue=True)
    again = conn.get("q")
    assert again is not None
    assert again.headers == {"task": "t", "timelimit": [None, None], "stamps": {"a": 1}}
    assert again.properties == {"content_type": "json"}
    assert again.delivery_info["redelivered"] is True


def test_prefetch_limit_is_honoured(conn: MemoryTransport) -> None:
    conn.declare_queue("q")
    conn.qos(2)
    inbox = Inbox()
    conn.consume("q", inbox)
    for i in range(5):
        conn.publish(b"%d" % i, "", "q")
    assert drain_all(conn) == 2
    assert conn.declare_queue("q", passive=True).message_count == 3
    assert conn.drain_events(timeout=0.01) == 0
    conn.ack(inbox.got[0].delivery_tag)
    assert drain_all(conn) == 1
    conn.qos(0)
    assert drain_all(conn) == 2
    assert inbox.bodies == [b"0", b"1", b"2", b"3", b"4"]


def test_ack_multiple(conn: MemoryTransport) -> None:
    conn.declare_queue("q")
    inbox = Inbox()
    conn.consume("q", inbox)
    for i in range(5):
        conn.publish(b"%d" % i, "", "q")
    drain_all(conn)
    conn.ack(3, multiple=True)
    with pytest.raises(ChannelError, match="unknown delivery tag 2"):
        conn.ack(2)
    # The channel error requeued 4 and 5, the two still unacked.
    conn.connect()
    assert bodies_in(conn, "q") == [b"3", b"4"]


def test_ack_multiple_zero_acks_everything(conn: MemoryTransport) -> None:
    conn.declare_queue("q")
    conn.qos(3)
    conn.consume("q", Inbox())
    for _ in range(5):
        conn.publish(b"x", "", "q")
    assert drain_all(conn) == 3
    conn.ack(0, multiple=True)
    assert drain_all(conn) == 2


def test_unknown_delivery_tag_closes_the_channel(conn: MemoryTransport) -> None:
    conn.declare_queue("q")
    conn.publish(b"x", "", "q")
    d = conn.get("q")
    assert d is not None
    conn.ack(d.delivery_tag)
    with pytest.raises(ChannelError) as info:
        conn.ack(d.delivery_tag)
    assert str(info.value) == "cannot ack: unknown delivery tag 1 (406 PRECONDITION_FAILED)"
    assert not conn.connected
    with pytest.raises(ChannelError, match="unknown delivery tag"):
        conn.reject(1)
    conn.connect()
    conn.publish(b"y", "", "q")
    d = conn.get("q")
    assert d is not None and d.delivery_tag == 1  # a new channel counts from 1 again
    with pytest.raises(ChannelError, match="cannot reject: unknown delivery tag 99"):
        conn.reject(99)


def test_reject_requeue_goes_to_the_head(conn: MemoryTransport) -> None:
    conn.declare_queue("q")
    for b in (b"1", b"2", b"3"):
        conn.publish(b, "", "q")
    first = conn.get("q")
    assert first is not None and first.delivery_info["redelivered"] is False
    conn.reject(first.delivery_tag, requeue=True)
    again = conn.get("q", no_ack=True)
    assert again is not None
    assert (again.body, again.delivery_info["redelivered"]) == (b"1", True)
    second = conn.get("q")
    assert second is not None
    conn.reject(second.delivery_tag, requeue=False)
    assert bodies_in(conn, "q") == [b"3"]


def test_dead_letter_on_reject(conn: MemoryTransport) -> None:
    conn.declare_exchange("dlx", "direct")
    conn.declare_queue("dead")
    conn.bind_queue("dead", "dlx", "failed")
    conn.declare_queue(
        "work",
        arguments={"x-dead-letter-exchange": "dlx", "x-dead-letter-routing-key": "failed"},
    )
    conn.publish(b"job", "", "work", headers={"id": "1"})
    d = conn.get("work")
    assert d is not None
    conn.reject(d.delivery_tag, requeue=False)
    dead = conn.get("dead")
    assert dead is not None and dead.headers is not None
    assert dead.body == b"job"
    assert dead.delivery_info["exchange"] == "dlx"
    assert dead.delivery_info["routing_key"] == "failed"
    assert dead.headers["id"] == "1"
    [death] = dead.headers["x-death"]
    assert death["reason"] == "rejected"
    assert death["queue"] == "work"
    assert death["count"] == 1
    assert death["routing-keys"] == ["work"]
    assert dead.headers["x-first-death-reason"] == "rejected"


def test_dead_letter_through_the_default_exchange_keeps_the_routing_key(
    conn: MemoryTransport,
) -> None:
    conn.declare_queue("retry")
    conn.declare_queue("work", arguments={"x-dead-letter-exchange": ""})
    conn.publish(b"job", "", "work")
    d = conn.get("work")
    assert d is not None
    conn.reject(d.delivery_tag)
    # Dead-lettered to '' with the original key 'work': straight back to the work queue.
    back = conn.get("work")
    assert back is not None and back.headers is not None
    assert back.headers["x-death"][0]["reason"] == "rejected"


def test_queue_ttl_expires_and_dead_letters(conn: MemoryTransport) -> None:
    conn.declare_queue("expired")
    conn.declare_queue(
        "short",
        arguments={
            "x-message-ttl": 30,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": "expired",
        },
    )
    conn.publish(b"old", "", "short")
    time.sleep(0.06)
    conn.publish(b"new", "", "short")
    assert bodies_in(conn, "short") == [b"new"]
    dead = conn.get("expired")
    assert dead is not None and dead.headers is not None
    assert dead.body == b"old"
    assert dead.headers["x-death"][0]["reason"] == "expired"


def test_per_message_expiration(conn: MemoryTransport) -> None:
    conn.declare_queue("q")
    conn.publish(b"short", "", "q", properties={"expiration": "20"})
    conn.publish(b"long", "", "q", properties={"expiration": "60000"})
    time.sleep(0.05)
    assert MemoryBroker.get().message_count("q") == 1
    assert bodies_in(conn, "q") == [b"long"]
    with pytest.raises(ChannelError, match="invalid expiration"):
        conn.publish(b"x", "", "q", properties={"expiration": "soon"})


def test_zero_ttl_reaches_a_ready_consumer_and_expires_otherwise(conn: MemoryTransport) -> None:
    conn.declare_queue("idle")
    conn.publish(b"gone", "", "idle", properties={"expiration": "0"})
    time.sleep(0.001)
    assert bodies_in(conn, "idle") == []
    conn.declare_queue("busy")
    inbox = Inbox()
    conn.consume("busy", inbox)
    conn.publish(b"taken", "", "busy", properties={"expiration": "0"})
    assert drain_all(conn) == 1
    assert inbox.bodies == [b"taken"]


def test_expiry_back_into_the_same_queue_is_dropped(conn: MemoryTransport) -> None:
    # Dead-lettered through '' with its own name as routing key, an expired message would go
    # round forever; like RabbitMQ, the broker drops it instead.
    conn.declare_queue("delay", arguments={"x-message-ttl": 10, "x-dead-letter-exchange": ""})
    conn.publish(b"later", "", "delay")
    time.sleep(0.03)
    assert MemoryBroker.get().message_count("delay") == 0


def test_expired_message_dead_lettered_to_another_queue_reaches_its_consumer() -> None:
    with MemoryTransport() as producer, MemoryTransport() as consumer:
        producer.declare_queue("dead")
        producer.declare_queue(
            "delay",
            arguments={
                "x-message-ttl": 20,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": "dead",
            },
        )
        inbox = Inbox()
        consumer.consume("dead", inbox)
        producer.publish(b"later", "", "delay")
        started = time.monotonic()
        assert consumer.drain_events(timeout=2) == 1
        assert time.monotonic() - started < 1
        assert inbox.bodies == [b"later"]


def test_priority_queue_order(conn: MemoryTransport) -> None:
    conn.declare_queue("p", arguments={"x-max-priority": 5})
    for body, priority in [(b"a1", 1), (b"b5", 5), (b"c0", None), (b"d5", 5), (b"e9", 9)]:
        props = {} if priority is None else {"priority": priority}
        conn.publish(body, "", "p", properties=props)
    # 9 is capped at the queue's maximum, 5, and keeps FIFO order within it.
    assert bodies_in(conn, "p") == [b"b5", b"d5", b"e9", b"a1", b"c0"]


def test_plain_queue_ignores_priority(conn: MemoryTransport) -> None:
    conn.declare_queue("q")
    conn.publish(b"low", "", "q", properties={"priority": 1})
    conn.publish(b"high", "", "q", properties={"priority": 9})
    assert bodies_in(conn, "q") == [b"low", b"high"]


def test_close_requeues_unacked_with_redelivered_flag() -> None:
    worker = MemoryTransport()
    worker.connect()
    worker.declare_queue("q")
    inbox = Inbox()
    worker.consume("q", inbox)
    for i in range(4):
        worker.publish(b"%d" % i, "", "q")
    worker.drain_events(timeout=0)
    worker.ack(inbox.got[1].delivery_tag)
    worker.close()  # "killed" with 0, 2 and 3 unacked

    with MemoryTransport() as other:
        redo = Inbox()
        other.consume("q", redo)
        drain_all(other)
        assert redo.bodies == [b"0", b"2", b"3"]
        assert all(d.delivery_info["redelivered"] for d in redo.got)


def test_close_returns_undrained_deliveries_unmarked() -> None:
    with MemoryTransport() as producer:
        producer.declare_queue("q")
        worker = MemoryTransport()
        worker.connect()
        worker.qos(10)
        worker.consume("q", Inbox())
        producer.publish(b"x", "", "q")
        worker.close()  # assigned but never handed to the callback
        d = producer.get("q")
        assert d is not None and d.delivery_info["redelivered"] is False


def test_queue_depth_counts_waiting_and_unacked(conn: MemoryTransport) -> None:
    broker = MemoryBroker.get()
    conn.declare_queue("q")
    conn.qos(2)
    inbox = Inbox()
    conn.consume("q", inbox)
    for _ in range(5):
        conn.publish(b"x", "", "q")
    assert (broker.message_count("q"), broker.queue_depth("q")) == (3, 5)
    drain_all(conn)
    conn.ack(inbox.got[0].delivery_tag)
    assert (broker.message_count("q"), broker.queue_depth("q")) == (2, 4)
    with pytest.raises(KeyError):
        broker.queue_depth("missing")


def test_round_robin_between_consumers_of_one_connection(conn: MemoryTransport) -> None:
    conn.declare_queue("q")
    a, b = Inbox(), Inbox()
    conn.consume("q", a)
    conn.consume("q", b)
    for i in range(6):
        conn.publish(b"%d" % i, "", "q")
    drain_all(conn)
    assert a.bodies == [b"0", b"2", b"4"]
    assert b.bodies == [b"1", b"3", b"5"]


def test_round_robin_across_connections() -> None:
    with MemoryTransport() as one, MemoryTransport() as two, MemoryTransport() as producer:
        producer.declare_queue("q")
        a, b = Inbox(), Inbox()
        one.consume("q", a)
        two.consume("q", b)
        for i in range(4):
            producer.publish(b"%d" % i, "", "q")
        drain_all(one)
        drain_all(two)
        assert a.bodies == [b"0", b"2"]
        assert b.bodies == [b"1", b"3"]


def test_round_robin_skips_a_consumer_at_its_prefetch_limit() -> None:
    with MemoryTransport() as busy, MemoryTransport() as idle, MemoryTransport() as producer:
        producer.declare_queue("q")
        busy.qos(1)
        a, b = Inbox(), Inbox()
        busy.consume("q", a)
        idle.consume("q", b)
        for i in range(4):
            producer.publish(b"%d" % i, "", "q")
        drain_all(busy)
        drain_all(idle)
        assert a.bodies == [b"0"]
        assert b.bodies == [b"1", b"2", b"3"]


def test_cancel_stops_deliveries_and_keeps_unacked(conn: MemoryTransport) -> None:
    conn.declare_queue("q")
    inbox = Inbox()
    tag = conn.consume("q", inbox)
    conn.publish(b"1", "", "q")
    drain_all(conn)
    conn.publish(b"2", "", "q")  # assigned, not yet drained
    conn.cancel(tag)
    conn.cancel(tag)  # cancelling twice is fine
    conn.publish(b"3", "", "q")
    assert drain_all(conn) == 0
    assert inbox.bodies == [b"1"]
    conn.ack(inbox.got[0].delivery_tag)  # still ackable after cancel
    assert bodies_in(conn, "q") == [b"2", b"3"]


def test_consumer_tag_reuse(conn: MemoryTransport) -> None:
    conn.declare_queue("q")
    conn.consume("q", Inbox(), consumer_tag="t")
    with pytest.raises(ChannelError, match="NOT_ALLOWED"):
        conn.consume("q", Inbox(), consumer_tag="t")


def test_callbacks_may_ack_publish_and_consume_reentrantly(conn: MemoryTransport) -> None:
    conn.declare_queue("in")
    conn.declare_queue("out")
    out = Inbox()

    def handle(d: Delivery) -> None:
        conn.publish(d.body + b"!", "", "out")
        conn.ack(d.delivery_tag)
        if d.body == b"a":
            conn.consume("out", out, no_ack=True)

    conn.qos(1)
    conn.consume("in", handle)
    conn.publish(b"a", "", "in")
    conn.publish(b"b", "", "in")
    drain_all(conn)
    assert sorted(out.bodies) == [b"a!", b"b!"]


def test_drain_events_times_out(conn: MemoryTransport) -> None:
    conn.declare_queue("q")
    conn.consume("q", Inbox())
    started = time.monotonic()
    assert conn.drain_events(timeout=0.05) == 0
    assert 0.04 <= time.monotonic() - started < 1


def test_wakeup_from_another_thread(conn: MemoryTransport) -> None:
    conn.declare_queue("q")
    conn.consume("q", Inbox())
    result: list[int] = []
    waiter = threading.Thread(target=lambda: result.append(conn.drain_events(timeout=10)))
    started = time.monotonic()
    waiter.start()
    time.sleep(0.05)
    conn.wakeup()
    waiter.join(5)
    assert result == [0]
    assert time.monotonic() - started < 2


def test_publish_from_another_thread_wakes_the_drainer(conn: MemoryTransport) -> None:
    conn.declare_queue("q")
    inbox = Inbox()
    conn.consume("q", inbox)
    with MemoryTransport() as producer:
        timer = threading.Timer(0.05, producer.publish, (b"x", "", "q"))
        timer.start()
        assert conn.drain_events(timeout=5) == 1
        timer.join()
    assert inbox.bodies == [b"x"]


def test_close_from_another_thread_ends_a_blocked_drain() -> None:
    t = MemoryTransport()
    t.connect()
    t.declare_queue("q")
    t.consume("q", Inbox())
    errors: list[BaseException] = []

    def drain() -> None:
        try:
            t.drain_events(timeout=10)
        except ConnectionError as exc:
            errors.append(exc)

    waiter = threading.Thread(target=drain)
    waiter.start()
    time.sleep(0.05)
    t.close()
    waiter.join(5)
    assert len(errors) == 1
    assert "connection was closed" in str(errors[0])


def test_ten_thousand_messages_between_threads_no_loss_no_duplicate() -> None:
    total = 10_000
    prefetch = 50
    with MemoryTransport() as setup:
        setup.declare_queue("load")
    consumer = MemoryTransport()
    consumer.connect()
    consumer.qos(prefetch)
    seen: list[bytes] = []
    over_limit: list[int] = []
    outstanding = 0

    def on_message(d: Delivery) -> None:
        nonlocal outstanding
        outstanding += 1
        if outstanding > prefetch:
            over_limit.append(outstanding)
        seen.append(d.body)
        # Ack in batches of 10 with multiple=True, the way the ack batcher does.
        if len(seen) % 10 == 0 or len(seen) == total:
            consumer.ack(d.delivery_tag, multiple=True)
            outstanding = 0

    consumer.consume("load", on_message)

    def produce() -> None:
        with MemoryTransport() as producer:
            for i in range(total):
                producer.publish(b"%d" % i, "", "load")

    def consume() -> None:
        deadline = time.monotonic() + 60
        while len(seen) < total and time.monotonic() < deadline:
            consumer.drain_events(timeout=1)

    threads = [threading.Thread(target=consume), threading.Thread(target=produce)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    consumer.close()
    assert len(seen) == total
    assert len(set(seen)) == total
    assert seen == [b"%d" % i for i in range(total)]  # one producer, one queue: FIFO
    assert over_limit == []
    assert MemoryBroker.get().message_count("load") == 0


def test_reset_all_closes_open_transports() -> None:
    t = MemoryTransport()
    t.connect()
    t.declare_queue("q")
    MemoryBroker.reset_all()
    with pytest.raises(ConnectionError, match="reset"):
        t.publish(b"x", "", "q")
    t.connect()  # a fresh broker: the queue is gone
    with pytest.raises(ChannelError, match="NOT_FOUND"):
        t.declare_queue("q", passive=True)


# -- registry ----------------------------------------------------------------------------------


def test_transport_for_url_picks_by_scheme() -> None:
    t = transport_for_url("memory://", heartbeat=10)
    assert isinstance(t, MemoryTransport)
    assert t.url == "memory://"
    assert t.options == {"heartbeat": 10}
    assert "memory" in known_schemes()


def test_unknown_scheme_lists_the_known_ones() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown broker url scheme 'nope'.*memory://"):
        transport_for_url("nope://host")
    with pytest.raises(ConfigurationError, match="no scheme"):
        transport_for_url("localhost:5672")
    with pytest.raises(ConfigurationError, match="failover list"):
        transport_for_url("memory://a;memory://b")


def test_register_transport_loads_lazily() -> None:
    register_transport("test-lazy", "celeriac.transports.memory:MemoryTransport")
    register_transport("test-broken", "celeriac.no_such_module:Transport")
    with pytest.raises(ConfigurationError, match="cannot register"):
        register_transport("test-bad", "no colon here")
    assert {"test-lazy", "test-broken"} <= set(known_schemes())
    # Only the memory transport is importable behind test-lazy; its URL check still applies.
    with pytest.raises(ConfigurationError, match="want memory://"):
        transport_for_url("test-lazy://x")
    with pytest.raises(ConfigurationError, match="cannot load the test-broken:// transport"):
        transport_for_url("test-broken://x")


def test_split_urls() -> None:
    assert split_urls("amqp://a//; amqp://b//;") == ["amqp://a//", "amqp://b//"]
    assert split_urls("memory://") == ["memory://"]
    with pytest.raises(ConfigurationError, match="names no broker"):
        split_urls(" ; ")
