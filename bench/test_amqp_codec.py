"""Micro-benchmark: the AMQP codec, compiled vs pure vs py-amqp (what Celery's worker uses).

Run: ``.venv/bin/python -m pytest bench/test_amqp_codec.py --benchmark-only -q``.

* **feed**: one buffer holding 1,000 typical Celery deliveries (``basic.deliver``, a content
  header with Celery's 19 task headers and 6 properties, a ~100-byte JSON body; 610 bytes
  each), decoded into 1,000 deliveries. For py-amqp: its ``read_frame`` reading the frames
  from the same bytes (a ``_read`` that slices the buffer stands in for the socket), its
  ``frame_handler`` assembling the messages, and what its channel does per delivery (read the
  ``basic.deliver`` arguments, set ``delivery_info``).
* **encode**: one ``encode_message`` of that task message vs py-amqp building the
  ``basic.publish`` arguments and a ``Message`` and writing them with ``frame_writer``.

Results (per delivery: divide the feed numbers by 1,000) and the machine are in
``docs/benchmarks.md``.
"""

from __future__ import annotations

import importlib
import os
import uuid
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from tests.samples import celery_headers

DELIVERIES = 1000
TASK_ID = str(uuid.uuid4())
HEADERS: dict[str, Any] = celery_headers(TASK_ID, argsrepr="(2, 2)")
PROPERTIES: dict[str, Any] = {
    "content_type": "application/json",
    "content_encoding": "utf-8",
    "correlation_id": TASK_ID,
    "reply_to": "da1d476a-e1f9-3a00-b71e-7ca92964338c",
    "delivery_mode": 2,
    "priority": 0,
}
BODY = b'[[2, 2], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]    '


def implementation(kind: str) -> ModuleType:
    if kind == "pure":
        return importlib.import_module("celeriac._speedups_py.amqp_codec")
    if os.environ.get("CELERIAC_NO_EXTENSIONS") == "1":
        pytest.skip("pure-only run")
    try:
        return importlib.import_module("celeriac._speedups.amqp_codec")
    except ImportError:
        pytest.skip("compiled speedups are not built")


def deliveries_stream() -> bytes:
    """1,000 deliveries as RabbitMQ sends them, built with the pure codec."""
    codec = importlib.import_module("celeriac._speedups_py.amqp_codec")
    message = codec.encode_message(1, "", "celery", False, BODY, PROPERTIES, HEADERS, 131072)
    publish_size = 8 + int.from_bytes(message[3:7], "big")
    return b"".join(
        codec.encode_method(1, codec.BASIC_DELIVER, ("None1", tag, False, "", "celery"))
        + message[publish_size:]
        for tag in range(1, DELIVERIES + 1)
    )


STREAM = deliveries_stream()


@pytest.mark.parametrize("kind", ["compiled", "pure"])
def test_feed(benchmark: Any, kind: str) -> None:
    """``FrameDecoder().feed(stream)``: 1,000 deliveries per round."""
    benchmark.group = "feed: 1,000 Celery deliveries"
    decoder_class = implementation(kind).FrameDecoder

    def run() -> list[Any]:
        return list(decoder_class().feed(STREAM))

    events = benchmark(run)
    assert len(events) == DELIVERIES
    assert events[-1].headers == HEADERS and events[-1].body == BODY


def py_amqp_reader() -> Callable[[], list[Any]]:
    from amqp.method_framing import frame_handler
    from amqp.serialization import loads
    from amqp.transport import _AbstractTransport

    class BufferTransport:
        """``_read`` from an in-memory buffer instead of a socket."""

        def __init__(self, data: bytes) -> None:
            self.data = data
            self.pos = 0

        def _read(self, n: int, initial: bool = False) -> bytes:
            start = self.pos
            self.pos = start + n
            return self.data[start : start + n]

    class Connection:
        bytes_recv = 0

    read_frame = _AbstractTransport.read_frame
    size = len(STREAM)

    def run() -> list[Any]:
        messages: list[Any] = []

        def on_method(channel: int, method_sig: Any, payload: bytes, msg: Any) -> None:
            # what Channel.dispatch_method and Channel._on_basic_deliver do per delivery
            consumer_tag, delivery_tag, redelivered, exchange, routing_key = loads(
                "sLbss", payload, 4
            )[0]
            msg.delivery_info = {
                "consumer_tag": consumer_tag,
                "delivery_tag": delivery_tag,
                "redelivered": redelivered,
                "exchange": exchange,
                "routing_key": routing_key,
            }
            messages.append(msg)

        transport = BufferTransport(STREAM)
        on_frame = frame_handler(Connection(), on_method)
        while transport.pos < size:
            on_frame(read_frame(transport))
        return messages

    return run


def test_feed_py_amqp(benchmark: Any) -> None:
    """py-amqp 5.4: read_frame + frame_handler + the deliver arguments, same bytes."""
    pytest.importorskip("amqp")
    benchmark.group = "feed: 1,000 Celery deliveries"
    messages = benchmark(py_amqp_reader())
    assert len(messages) == DELIVERIES
    assert messages[-1].properties["application_headers"] == HEADERS
    assert messages[-1].body == BODY


@pytest.mark.parametrize("kind", ["compiled", "pure"])
def test_encode_message(benchmark: Any, kind: str) -> None:
    """``encode_message``: basic.publish + content header + body, one buffer."""
    benchmark.group = "encode: one Celery task message"
    encode = implementation(kind).encode_message
    data = benchmark(encode, 1, "", "celery", False, BODY, PROPERTIES, HEADERS, 131072)
    assert data.endswith(BODY + b"\xce")


def test_encode_message_py_amqp(benchmark: Any) -> None:
    """py-amqp 5.4: the publish arguments, a Message and frame_writer (one buffer)."""
    pytest.importorskip("amqp")
    from amqp import spec
    from amqp.basic_message import Message
    from amqp.method_framing import frame_writer
    from amqp.serialization import dumps

    class Connection:
        frame_max = 131072
        bytes_sent = 0

    class Transport:
        def __init__(self) -> None:
            self.last: Any = None

        def write(self, data: Any) -> None:
            self.last = data

    transport = Transport()
    write = frame_writer(Connection(), transport)

    def run() -> Any:
        args = dumps("Bssbb", (0, "", "celery", False, False))
        message = Message(BODY, application_headers=HEADERS, **PROPERTIES)
        write(1, 1, spec.Basic.Publish, args, message)
        return transport.last

    benchmark.group = "encode: one Celery task message"
    assert bytes(benchmark(run)).endswith(BODY + b"\xce")
