"""The AMQP transport against the real RabbitMQ on this machine."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import pytest

from celeriac.errors import ChannelError, ConnectionBlocked, ConnectionError, TransportError
from celeriac.transports.amqp import AMQPTransport
from celeriac.transports.base import Delivery, Transport
from celeriac.transports.registry import transport_for_url
from tests.integration.conftest import (
    Names,
    Proxy,
    TransportFactory,
    broker_url,
    connection_named,
    free_port,
    rabbitmqctl,
)

pytestmark = pytest.mark.integration


def drain_until(transport: AMQPTransport, done: Callable[[], bool], timeout: float = 5.0) -> None:
    """Drain until ``done()``; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s")
        transport.drain_events(timeout=0.1)


def settle(transport: AMQPTransport, seconds: float) -> None:
    """Drain for ``seconds`` whatever comes."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        transport.drain_events(timeout=deadline - time.monotonic())


def get_one(transport: AMQPTransport, queue: str, no_ack: bool = False) -> Delivery:
    """``basic.get`` until a message comes (publishing is asynchronous); fail after 5 s."""
    deadline = time.monotonic() + 5
    while (delivery := transport.get(queue, no_ack)) is None:
        if time.monotonic() > deadline:
            pytest.fail(f"no message in queue {queue} within 5s")
        time.sleep(0.01)
    return delivery


def wait_for_count(transport: AMQPTransport, queue: str, count: int) -> None:
    """Wait until ``queue`` holds ``count`` ready messages (publishing is asynchronous)."""
    deadline = time.monotonic() + 5
    while transport.declare_queue(queue, durable=False, passive=True).message_count != count:
        if time.monotonic() > deadline:
            pytest.fail(f"queue {queue} did not reach {count} messages")
        time.sleep(0.02)


def declared(transport: AMQPTransport, names: Names, suffix: str = "q", **kwargs: Any) -> str:
    queue = names.queue(suffix)
    transport.declare_queue(queue, durable=False, **kwargs)
    return queue


# -- handshake -------------------------------------------------------------------------------


def test_handshake_announces_celeriac_and_reads_the_server(
    make_transport: TransportFactory,
) -> None:
    name = f"celeriac.test.{uuid.uuid4().hex[:12]}"
    transport = make_transport(connection_name=name)
    assert isinstance(transport, Transport)
    assert transport.connected
    assert transport.server_properties["product"] == "RabbitMQ"
    assert transport.server_product_version().startswith("RabbitMQ 3.")
    # RabbitMQ 3.3-3.x: a channel-wide prefetch needs global=True (kombu 5.6's rule)
    assert transport.qos_global_default() is True
    # we ask for 120 s, RabbitMQ's default is 60: the smaller wins
    assert transport.heartbeat == 60
    props = connection_named(name)["client_properties"]
    assert props["product"] == "celeriac"
    assert props["capabilities"]["consumer_cancel_notify"] is True
    assert props["capabilities"]["connection.blocked"] is True
    assert props["capabilities"]["publisher_confirms"] is True


def test_registry_gives_the_amqp_transport_for_every_scheme(amqp_url: str) -> None:
    for scheme in ("amqp", "amqps", "pyamqp"):
        url = amqp_url.replace("amqp://", f"{scheme}://", 1)
        assert type(transport_for_url(url)) is AMQPTransport


def test_amqplain_login(make_transport: TransportFactory) -> None:
    assert make_transport(login_method="AMQPLAIN").connected


def test_wrong_password_is_a_connection_error_with_the_brokers_words(
    make_transport: TransportFactory,
) -> None:
    transport = make_transport(broker_url(password="wrong"), connect=False)
    with pytest.raises(ConnectionError) as info:
        transport.connect()
    assert info.value.reply_code == 403
    assert "ACCESS_REFUSED" in str(info.value)
    assert not transport.connected


def test_missing_vhost_is_a_connection_error(make_transport: TransportFactory) -> None:
    transport = make_transport(broker_url(vhost=f"celeriac.test.{uuid.uuid4().hex}"), connect=False)
    with pytest.raises(ConnectionError) as info:
        transport.connect()
    assert info.value.reply_code == 530
    assert "NOT_ALLOWED" in str(info.value)


def test_failover_list_skips_a_broker_that_refuses(make_transport: TransportFactory) -> None:
    good = broker_url()
    transport = make_transport(f"{broker_url(port=free_port())};{good}")
    assert transport.connected
    assert transport.address == transport.addresses[1]


def test_no_broker_answering_lists_every_failure(make_transport: TransportFactory) -> None:
    first, second = free_port(), free_port()
    url = f"amqp://127.0.0.1:{first}//;amqp://127.0.0.1:{second}//"
    transport = make_transport(url, connect=False, connect_timeout=1)
    started = time.monotonic()
    with pytest.raises(ConnectionError, match="cannot connect to any broker") as info:
        transport.connect()
    assert str(first) in str(info.value)
    assert str(second) in str(info.value)
    assert time.monotonic() - started < 3


# -- declarations and messages ---------------------------------------------------------------


def test_round_trip_keeps_every_celery_header_and_property(
    transport: AMQPTransport, names: Names
) -> None:
    exchange = names.exchange()
    queue = declared(transport, names, arguments={"x-max-priority": 10})
    transport.declare_exchange(exchange, "direct", durable=False)
    transport.bind_queue(queue, exchange, "rk")
    task_id = str(uuid.uuid4())
    headers = {
        "lang": "py",
        "task": "proj.add",
        "id": task_id,
        "root_id": task_id,
        "parent_id": None,
        "group": None,
        "group_index": None,
        "shadow": None,
        "eta": "2030-01-02T03:04:05.000006+00:00",
        "expires": None,
        "retries": 3,
        "big": 2**40,
        "negative": -7,
        "ignore_result": False,
        "timelimit": [None, 1.5],
        "timelimit_ints": [10, 20],
        "argsrepr": "(1, 2)",
        "kwargsrepr": "{'é': '✓'}",
        "origin": "gen1@host",
        "stamped_headers": ["a", "b"],
        "stamps": {},
        "nested": {"a": {"b": [1, {"c": "d"}, []]}},
        "ratio": 0.25,
        "price": Decimal("12.50"),
        "when": datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
    }
    properties = {
        "content_type": "application/json",
        "content_encoding": "utf-8",
        "correlation_id": task_id,
        "reply_to": "reply.queue",
        "priority": 7,
        "delivery_mode": 2,
        "expiration": "60000",
        "message_id": "m1",
        "timestamp": 1700000000,
        "type": "task",
        "app_id": "celeriac-tests",
    }
    body = '[[1, 2], {"é": "✓"}, {}]'.encode()
    transport.publish(body, exchange, "rk", headers=headers, properties=properties)
    delivery = get_one(transport, queue)
    assert delivery.body == body
    assert delivery.headers == headers
    assert delivery.properties == properties
    assert delivery.delivery_info["exchange"] == exchange
    assert delivery.delivery_info["routing_key"] == "rk"
    assert delivery.delivery_info["redelivered"] is False
    assert delivery.delivery_info["message_count"] == 0
    transport.ack(delivery.delivery_tag)
    assert transport.get(queue) is None


def test_declare_returns_counts_and_purge_and_delete_count(
    transport: AMQPTransport, names: Names
) -> None:
    queue = declared(transport, names)
    for i in range(3):
        transport.publish(b"%d" % i, "", queue)
    wait_for_count(transport, queue, 3)
    info = transport.declare_queue(queue, durable=False, passive=True)
    assert (info.name, info.message_count, info.consumer_count) == (queue, 3, 0)
    assert transport.purge_queue(queue) == 3
    transport.publish(b"x", "", queue)
    wait_for_count(transport, queue, 1)
    assert transport.delete_queue(queue) == 1


def test_server_named_queue(transport: AMQPTransport, names: Names) -> None:
    info = transport.declare_queue("", durable=False, exclusive=True)
    assert info.name.startswith("amq.gen-")  # exclusive: it goes with the connection


def test_passive_declare_of_a_missing_queue_is_a_404_channel_error(
    transport: AMQPTransport, names: Names
) -> None:
    missing = names.queue("missing")
    with pytest.raises(ChannelError) as info:
        transport.declare_queue(missing, passive=True)
    assert info.value.reply_code == 404
    assert str(info.value).startswith("queue.declare: NOT_FOUND")
    assert str(info.value).endswith("(404)")
    assert not transport.connected
    transport.connect()
    assert transport.connected


def test_inequivalent_redeclare_closes_the_channel_until_connect(
    transport: AMQPTransport, names: Names
) -> None:
    queue = declared(transport, names)
    transport.publish(b"one", "", queue)
    wait_for_count(transport, queue, 1)
    held = transport.get(queue)
    assert held is not None
    with pytest.raises(ChannelError) as info:
        transport.declare_queue(queue, durable=True)
    assert info.value.reply_code == 406
    assert "queue.declare: PRECONDITION_FAILED - inequivalent arg 'durable'" in str(info.value)
    assert not transport.connected
    with pytest.raises(ChannelError, match="call connect"):
        transport.publish(b"x", "", queue)
    # the tag from the closed channel is never sent on the new one
    transport.connect()
    assert transport.connected
    with pytest.raises(ConnectionError, match="gone"):
        transport.ack(held.delivery_tag)
    again = transport.get(queue)
    assert again is not None
    assert again.body == b"one"
    assert again.delivery_info["redelivered"] is True
    assert again.delivery_tag != held.delivery_tag
    transport.ack(again.delivery_tag)
    assert transport.declare_queue(queue, durable=False).message_count == 0


def test_large_bodies_span_many_frames(transport: AMQPTransport, names: Names) -> None:
    queue = declared(transport, names)
    bodies = [bytes(range(256)) * 4096, uuid.uuid4().bytes * (5 * 1024 * 1024 // 16)]
    assert [len(b) for b in bodies] == [1024 * 1024, 5 * 1024 * 1024]
    for body in bodies:
        transport.publish(body, "", queue, properties={"content_type": "application/x-raw"})
    got: list[Delivery] = []
    transport.consume(queue, got.append)
    drain_until(transport, lambda: len(got) == 2, timeout=20)
    assert [d.body for d in got] == bodies
    transport.ack(got[-1].delivery_tag, multiple=True)


def test_get_on_an_empty_queue_is_none(transport: AMQPTransport, names: Names) -> None:
    assert transport.get(declared(transport, names)) is None


def test_dead_letter_arguments_and_x_death(transport: AMQPTransport, names: Names) -> None:
    dlx = names.exchange("dlx")
    dead = declared(transport, names, "dead")
    transport.declare_exchange(dlx, "fanout", durable=False)
    transport.bind_queue(dead, dlx, "")
    queue = declared(
        transport,
        names,
        "live",
        arguments={
            "x-dead-letter-exchange": dlx,
            "x-dead-letter-routing-key": "dead",
            "x-message-ttl": 60000,
            "x-expires": 600000,
        },
    )
    transport.publish(b"doomed", "", queue)
    wait_for_count(transport, queue, 1)
    delivery = transport.get(queue)
    assert delivery is not None
    transport.reject(delivery.delivery_tag, requeue=False)
    dead_letter = get_one(transport, dead, no_ack=True)
    assert dead_letter.body == b"doomed"
    assert dead_letter.headers is not None
    death = dead_letter.headers["x-death"][0]
    assert death["count"] == 1
    assert death["reason"] == "rejected"
    assert death["queue"] == queue
    assert isinstance(death["time"], datetime)


def test_quorum_queue(transport: AMQPTransport, names: Names) -> None:
    queue = names.queue("quorum")
    transport.declare_queue(queue, durable=True, arguments={"x-queue-type": "quorum"})
    transport.publish(b"q", "", queue)
    transport.reject(get_one(transport, queue).delivery_tag, requeue=True)
    again = get_one(transport, queue)
    assert again.headers is not None
    assert again.headers["x-delivery-count"] == 1
    transport.ack(again.delivery_tag)


# -- consuming and settling ------------------------------------------------------------------


def test_prefetch_holds_at_most_n_unacked_and_ack_multiple_frees_them(
    transport: AMQPTransport, names: Names
) -> None:
    queue = declared(transport, names)
    for i in range(10):
        transport.publish(b"%d" % i, "", queue)
    transport.qos(3, transport.qos_global_default())
    got: list[Delivery] = []
    tag = transport.consume(queue, got.append)
    settle(transport, 0.5)
    assert [d.body for d in got] == [b"0", b"1", b"2"]
    transport.ack(got[2].delivery_tag, multiple=True)
    drain_until(transport, lambda: len(got) == 6)
    settle(transport, 0.3)
    assert len(got) == 6
    transport.ack(got[3].delivery_tag)
    drain_until(transport, lambda: len(got) == 7)
    transport.cancel(tag)
    transport.ack(got[6].delivery_tag, multiple=True)
    transport.qos(0)
    info = transport.declare_queue(queue, durable=False, passive=True)
    assert info.message_count == 3
    assert info.consumer_count == 0


def test_reject_requeue_redelivers_and_reject_drops(transport: AMQPTransport, names: Names) -> None:
    queue = declared(transport, names)
    transport.publish(b"m", "", queue)
    wait_for_count(transport, queue, 1)
    first = transport.get(queue)
    assert first is not None
    assert first.delivery_info["redelivered"] is False
    transport.reject(first.delivery_tag, requeue=True)
    second = transport.get(queue)
    assert second is not None
    assert second.delivery_info["redelivered"] is True
    transport.nack(second.delivery_tag, requeue=True)
    third = transport.get(queue)
    assert third is not None
    transport.reject(third.delivery_tag, requeue=False)
    assert transport.get(queue) is None


def test_unacked_deliveries_come_back_redelivered_after_close(
    make_transport: TransportFactory, names: Names
) -> None:
    first = make_transport()
    queue = declared(first, names)
    first.publish(b"a", "", queue)
    first.publish(b"b", "", queue)
    got: list[Delivery] = []
    first.consume(queue, got.append)
    drain_until(first, lambda: len(got) == 2)
    assert not any(d.delivery_info["redelivered"] for d in got)
    first.close()
    assert not first.connected
    first.close()  # twice is fine
    second = make_transport()
    again: list[Delivery] = []
    second.consume(queue, again.append)
    drain_until(second, lambda: len(again) == 2)
    assert [d.body for d in again] == [b"a", b"b"]
    assert all(d.delivery_info["redelivered"] for d in again)
    second.ack(again[-1].delivery_tag, multiple=True)


def test_the_broker_cancelling_a_consumer_is_recorded(
    make_transport: TransportFactory, names: Names
) -> None:
    transport = make_transport()
    other = make_transport()
    queue = declared(transport, names)
    tag = transport.consume(queue, lambda d: None)
    other.delete_queue(queue)
    drain_until(transport, lambda: tag in transport.cancelled_by_broker)
    assert transport.connected
    assert transport.drain_events(timeout=0.1) == 0


def test_drain_events_times_out_with_zero(transport: AMQPTransport, names: Names) -> None:
    transport.consume(declared(transport, names), lambda d: None)
    started = time.monotonic()
    assert transport.drain_events(timeout=0.3) == 0
    assert 0.25 < time.monotonic() - started < 1.5


def test_wakeup_interrupts_a_blocked_drain(transport: AMQPTransport, names: Names) -> None:
    transport.consume(declared(transport, names), lambda d: None)
    result: list[Any] = []

    def drain() -> None:
        started = time.monotonic()
        result.append(transport.drain_events(timeout=None))
        result.append(time.monotonic() - started)

    thread = threading.Thread(target=drain)
    thread.start()
    time.sleep(0.3)
    transport.wakeup()
    thread.join(timeout=3)
    assert not thread.is_alive()
    assert result[0] == 0
    assert result[1] < 2


def test_publishing_from_four_threads_while_consuming(
    make_transport: TransportFactory, names: Names
) -> None:
    transport = make_transport()
    queue = declared(transport, names)
    per_thread = 300
    got: list[Delivery] = []

    def on_message(delivery: Delivery) -> None:
        got.append(delivery)
        transport.ack(delivery.delivery_tag)

    transport.qos(50)
    transport.consume(queue, on_message)
    errors: list[BaseException] = []

    def publisher(n: int) -> None:
        try:
            for i in range(per_thread):
                body = f"{n}:{i}:".encode() + bytes([n]) * (i * 37 % 20000)
                transport.publish(body, "", queue, headers={"n": n, "i": i})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=publisher, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    drain_until(transport, lambda: len(got) == 4 * per_thread, timeout=30)
    for thread in threads:
        thread.join()
    assert errors == []
    seen = set()
    for delivery in got:
        assert delivery.headers is not None
        n, i = delivery.headers["n"], delivery.headers["i"]
        assert delivery.body == f"{n}:{i}:".encode() + bytes([n]) * (i * 37 % 20000)
        seen.add((n, i))
    assert len(seen) == 4 * per_thread
    settle(transport, 0.2)
    assert len(got) == 4 * per_thread


# -- publishing ------------------------------------------------------------------------------


def test_publisher_confirms(make_transport: TransportFactory, names: Names) -> None:
    transport = make_transport(confirm_publish=True)
    queue = declared(transport, names)
    for i in range(20):
        transport.publish(b"%d" % i, "", queue)
    assert transport.declare_queue(queue, durable=False, passive=True).message_count == 20
    missing = names.exchange("missing")
    with pytest.raises(ChannelError) as info:
        transport.publish(b"x", missing, "rk")
    assert info.value.reply_code == 404
    assert "NOT_FOUND" in str(info.value)
    transport.connect()
    transport.publish(b"after", "", queue)


def test_confirmed_mandatory_publish_that_no_queue_takes_raises(
    make_transport: TransportFactory, names: Names
) -> None:
    transport = make_transport(confirm_publish=True)
    exchange = names.exchange()
    transport.declare_exchange(exchange, "direct", durable=False)
    with pytest.raises(ChannelError) as info:
        transport.publish(b"x", exchange, "nobody", mandatory=True)
    assert info.value.reply_code == 312
    assert "NO_ROUTE" in str(info.value)
    assert transport.connected  # a return does not close the channel
    transport.publish(b"x", exchange, "nobody")  # not mandatory: dropped, fine


def test_mandatory_return_without_confirms_is_recorded(
    transport: AMQPTransport, names: Names
) -> None:
    exchange = names.exchange()
    transport.declare_exchange(exchange, "topic", durable=False)
    transport.publish(b"lost", exchange, "a.b", mandatory=True)
    drain_until(transport, lambda: len(transport.returned) == 1)
    code, text, returned_exchange, routing_key, message = transport.returned[0]
    assert (code, text, returned_exchange, routing_key) == (312, "NO_ROUTE", exchange, "a.b")
    assert message.body == b"lost"


def test_memory_alarm_makes_publish_raise_connection_blocked(
    make_transport: TransportFactory, names: Names
) -> None:
    transport = make_transport(publish_timeout=1.5)
    queue = declared(transport, names)
    try:
        rabbitmqctl("set_vm_memory_high_watermark", "0.0000001")
        with pytest.raises(ConnectionBlocked, match=r"blocked this connection \(") as info:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                started = time.monotonic()
                try:
                    transport.publish(b"x", "", queue)
                finally:
                    assert time.monotonic() - started < 1.5 + 1.0
                time.sleep(0.05)
        assert queue in str(info.value)
        assert transport.blocked is not None
    finally:
        rabbitmqctl("set_vm_memory_high_watermark", "0.4")
    drain_until(transport, lambda: transport.blocked is None, timeout=20)
    transport.publish(b"after", "", queue)


# -- heartbeats and connection loss ----------------------------------------------------------


def test_heartbeats_keep_a_busy_consumer_connected(
    make_transport: TransportFactory, names: Names
) -> None:
    transport = make_transport(heartbeat=2)
    assert transport.heartbeat == 2
    queue = declared(transport, names)
    got: list[Delivery] = []
    transport.consume(queue, got.append)
    time.sleep(7)  # a long task: nobody drains, the heartbeat thread writes
    transport.publish(b"still here", "", queue)
    drain_until(transport, lambda: len(got) == 1)
    transport.ack(got[0].delivery_tag)
    assert transport.connected


def test_broker_closing_the_connection_surfaces_in_drain_events(
    make_transport: TransportFactory, names: Names
) -> None:
    name = f"celeriac.test.{uuid.uuid4().hex[:12]}"
    transport = make_transport(connection_name=name)
    queue = declared(transport, names)
    transport.consume(queue, lambda d: None)
    rabbitmqctl("close_connection", connection_named(name)["pid"], "celeriac test")
    started = time.monotonic()
    with pytest.raises(ConnectionError) as info:
        while time.monotonic() - started < 5:
            transport.drain_events(timeout=0.5)
    assert time.monotonic() - started < 2
    assert info.value.reply_code == 320
    assert "celeriac test" in str(info.value)
    assert not transport.connected
    with pytest.raises(ConnectionError, match="call connect"):
        transport.publish(b"x", "", queue)
    transport.close()  # on a dead connection: no error
    transport.connect()
    transport.publish(b"x", "", queue)
    wait_for_count(transport, queue, 1)


def test_close_on_a_dead_socket_never_raises(transport: AMQPTransport) -> None:
    conn = transport._conn
    assert conn is not None and conn.sock is not None
    conn.sock.close()
    transport.close()
    assert not transport.connected


def test_ack_after_the_connection_died_raises(transport: AMQPTransport, names: Names) -> None:
    queue = declared(transport, names)
    transport.publish(b"m", "", queue)
    wait_for_count(transport, queue, 1)
    delivery = transport.get(queue)
    assert delivery is not None
    transport.close()
    with pytest.raises(ConnectionError):
        transport.ack(delivery.delivery_tag)
    transport.connect()
    with pytest.raises(ConnectionError, match="gone"):
        transport.ack(delivery.delivery_tag)
    with pytest.raises(TransportError):
        transport.reject(delivery.delivery_tag)


def test_a_silent_broker_is_detected_by_missed_heartbeats(
    make_transport: TransportFactory, names: Names, proxy: Proxy
) -> None:
    transport = make_transport(proxy.url(), heartbeat=1)
    transport.consume(declared(transport, names), lambda d: None)
    settle(transport, 1.5)  # heartbeats flow both ways
    proxy.frozen.set()  # the network now drops everything, without a FIN or RST
    started = time.monotonic()
    with pytest.raises(ConnectionError, match="missed heartbeats from the broker"):
        while time.monotonic() - started < 10:
            transport.drain_events(timeout=0.5)
    assert time.monotonic() - started < 3.5
    assert not transport.connected


def test_a_write_the_socket_cannot_take_raises_connection_blocked(
    make_transport: TransportFactory, names: Names, proxy: Proxy
) -> None:
    transport = make_transport(proxy.url(), publish_timeout=1, frame_max=1048576)
    queue = declared(transport, names)
    proxy.frozen.set()
    started = time.monotonic()
    with pytest.raises(ConnectionBlocked, match="did not take it within"):
        transport.publish(b"x" * (64 * 1024 * 1024), "", queue)
    assert time.monotonic() - started < 3
    # half a frame may be on the wire: the connection is not usable any more
    with pytest.raises(ConnectionError, match="call connect"):
        transport.publish(b"x", "", queue)


def test_tls_round_trip(
    make_transport: TransportFactory, names: Names, tls_proxy: Proxy, tls_files: Any
) -> None:
    cert, _ = tls_files
    transport = make_transport(tls_proxy.url("localhost"), ssl={"ca_certs": str(cert)})
    assert transport.address is not None and transport.address.tls
    queue = declared(transport, names)
    bodies = [b"small", bytes(range(256)) * 8192]
    for body in bodies:
        transport.publish(body, "", queue)
    got: list[Delivery] = []
    transport.consume(queue, got.append)
    drain_until(transport, lambda: len(got) == 2)
    assert [d.body for d in got] == bodies
    transport.ack(got[1].delivery_tag, multiple=True)


def test_tls_verifies_the_certificate_by_default(
    make_transport: TransportFactory, tls_proxy: Proxy
) -> None:
    transport = make_transport(tls_proxy.url("localhost"), connect=False)
    with pytest.raises(ConnectionError, match="certificate verify failed"):
        transport.connect()
    unverified = make_transport(tls_proxy.url("localhost"), ssl={"cert_reqs": "CERT_NONE"})
    assert unverified.connected


def test_a_channel_error_during_drain_then_connect(transport: AMQPTransport, names: Names) -> None:
    queue = declared(transport, names)
    transport.publish(b"m", "", queue)
    got: list[Delivery] = []
    transport.consume(queue, got.append)
    drain_until(transport, lambda: len(got) == 1)
    # like RabbitMQ's consumer_timeout: the broker closes the channel under the consumer
    transport.ack(got[0].delivery_tag + 1000)
    with pytest.raises(ChannelError) as info:
        settle(transport, 3)
    assert info.value.reply_code == 406
    assert "unknown delivery tag" in str(info.value)
    assert not transport.connected
    transport.connect()
    again: list[Delivery] = []
    transport.consume(queue, again.append)
    drain_until(transport, lambda: len(again) == 1)
    assert again[0].delivery_info["redelivered"] is True
    transport.ack(again[0].delivery_tag)


def test_close_from_another_thread_ends_a_blocked_drain(
    transport: AMQPTransport, names: Names
) -> None:
    transport.consume(declared(transport, names), lambda d: None)
    raised: list[BaseException] = []

    def drain() -> None:
        try:
            transport.drain_events(timeout=None)
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=drain)
    thread.start()
    time.sleep(0.2)
    started = time.monotonic()
    transport.close()
    assert time.monotonic() - started < 2
    thread.join(timeout=3)
    assert not thread.is_alive()
    assert len(raised) == 1
    assert isinstance(raised[0], ConnectionError)
