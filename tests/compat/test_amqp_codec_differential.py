"""Differential tests of the AMQP codec against py-amqp (what Celery uses) and pamqp.

What py-amqp or pamqp write, we read to the same values; what we write, they read to the same
values; where py-amqp and we write the same thing, the bytes are identical.

Known differences between the three, and how the tests treat them:

* ``T`` (timestamp) values: py-amqp reads a naive datetime in UTC, pamqp and celeriac an aware
  one (UTC). Compared after dropping the tzinfo. pamqp also reads a timestamp above 2**32 as
  milliseconds; the tests use dates before 2106.
* ``b``/``B``/``s``/``l``: older py-amqp read ``b`` unsigned and ``B`` signed, ``s`` as a short
  string and ``l`` unsigned, the reverse of RabbitMQ's errata; py-amqp 5.4 and pamqp follow the
  errata, as celeriac does. Neither py-amqp nor celeriac ever *writes* these tags (ints go out
  as ``I``/``L``), so only pamqp-written tables exercise them here: pamqp writes each int in the
  smallest of ``b s u I i l``.
* ``D``: py-amqp and celeriac carry a signed unscaled value, pamqp an unsigned one (reads
  negative decimals wrong); pamqp is given non-negative ones.
* bytes: py-amqp and celeriac write bytes as ``S``; a reader gives str back when they are UTF-8.
  pamqp (4.0) refuses bytes values in tables.
* py-amqp cannot write a Decimal with a positive exponent (``Decimal("1E+2")``: struct error);
  celeriac writes it with scale 0.
* py-amqp gives a message with an empty body the body ``""`` (str); celeriac ``b""``.
* Basic properties: py-amqp's ``timestamp`` is an int like ours, pamqp's a datetime; pamqp
  names the ``type`` property ``message_type``.
"""

from __future__ import annotations

import os
import socket
import struct
import uuid
from datetime import datetime, timezone
from decimal import Decimal
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from celeriac._speedups_py import amqp_codec as twin
from celeriac.transports.base import Delivery
from tests.conftest import ImplLoader
from tests.unit.test_amqp_codec import ALL_PROPERTIES, sample_args

amqp = pytest.importorskip("amqp")

from amqp import spec  # noqa: E402
from amqp.basic_message import Message  # noqa: E402
from amqp.method_framing import frame_handler, frame_writer  # noqa: E402
from amqp.serialization import dumps, loads  # noqa: E402

UTC = timezone.utc

# our argument codes -> py-amqp's format letters; reserved fields are written explicitly there
PY_AMQP_CODES = {
    "o": "o",
    "h": "B",
    "l": "l",
    "q": "L",
    "s": "s",
    "S": "S",
    "x": "S",
    "b": "b",
    "F": "F",
    "r": "B",
    "z": "s",
    "y": "S",
    "c": "b",
}
RESERVED = {"r": 0, "z": "", "y": "", "c": False}


@pytest.fixture
def codec(impl: ImplLoader) -> ModuleType:
    return impl("amqp_codec")


def naive(value: Any, errors: str = "strict") -> Any:
    """A decoded value as a decoder sees it: naive UTC datetimes, lists for tuples, text for
    long strings that decode (``errors="surrogatepass"``: py-amqp's rule; ours keeps bytes
    that are not strict UTF-8)."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value
    if isinstance(value, dict):
        return {k: naive(v, errors) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [naive(v, errors) for v in value]
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8", errors)
        except UnicodeDecodeError:
            return value
    return value


def py_amqp_args(method: int, args: tuple[Any, ...]) -> tuple[str, list[Any]]:
    """py-amqp's format string and argument list (reserved fields included) for a method."""
    codes = twin._METHODS[method][1]  # one table serves both implementations
    fmt = "".join(PY_AMQP_CODES[code] for code in codes)
    values = iter(args)
    full = [RESERVED[code] if code in RESERVED else next(values) for code in codes]
    return fmt, full


RICH_TABLE: dict[str, Any] = {
    "lang": "py",
    "task": "proj.tasks.add",
    "unicode": "\u00e9t\u00e9 \U0001f600",
    "raw": b"bytes",
    "retries": 0,
    "neg": -2147483647,
    "big": 2**40,
    "min": -(2**63),
    "ignore_result": False,
    "flag": True,
    "float": 0.1,
    "timelimit": [None, 30.5],
    "stamped_headers": ["a", "b"],
    "stamps": {},
    "nested": {"x-death": [{"count": 2, "time": datetime(2024, 1, 2, 3, 4, 5)}]},
    "dec": Decimal("-12.345"),
    "none": None,
    "tuple": (1, "two"),
}


# -- field tables ----------------------------------------------------------------------------


def test_tables_identical_to_py_amqp(codec: ModuleType) -> None:
    ours = codec.encode_table(RICH_TABLE)
    assert ours == dumps("F", [RICH_TABLE])
    (theirs,), offset = loads("F", ours, 0)
    assert offset == len(ours)
    assert theirs == naive(RICH_TABLE)
    assert naive(codec.decode_table(dumps("F", [RICH_TABLE]))) == naive(RICH_TABLE)


py_amqp_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
        st.floats(allow_nan=False),
        st.text(max_size=20),
        st.binary(max_size=8),
        st.decimals(places=4, min_value=-(10**5), max_value=10**5),
        st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2100, 1, 1)).map(
            lambda when: when.replace(microsecond=0)  # the wire carries whole seconds
        ),
    ),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


# the fixture only picks a module; nothing in it needs resetting between examples
@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@example(table={"": b"\xed\xa0\x80"})  # a lone surrogate, UTF-8 encoded: not strict UTF-8
@given(table=st.dictionaries(st.text(max_size=20), py_amqp_values, max_size=8))
def test_random_tables_identical_to_py_amqp(impl: ImplLoader, table: dict[str, Any]) -> None:
    codec = impl("amqp_codec")
    ours = codec.encode_table(table)
    assert ours == dumps("F", [table])
    assert loads("F", ours, 0)[0][0] == naive(table, "surrogatepass")
    assert naive(codec.decode_table(ours)) == naive(table)


# -- method frames ---------------------------------------------------------------------------


def test_every_method_identical_to_py_amqp(codec: ModuleType) -> None:
    methods = sample_args(codec)
    methods[codec.CONNECTION_SECURE] = (b"challenge",)  # py-amqp reads longstr args as text
    for method, args in methods.items():
        fmt, full = py_amqp_args(method, args)
        theirs = struct.pack(">HH", method >> 16, method & 0xFFFF) + dumps(fmt, full)
        ours = codec.encode_method(1, method, args)[7:-1]
        assert ours == theirs, codec.METHOD_NAMES[method]
        assert codec.decode_method(theirs) == (method, args)
        values, offset = loads(fmt, ours, 4)
        assert offset == len(ours)
        assert values == naive(full), codec.METHOD_NAMES[method]


class FakeConnection:
    """What py-amqp's frame reader and writer need of a connection."""

    def __init__(self, frame_max: int) -> None:
        self.frame_max = frame_max
        self.bytes_sent = 0
        self.bytes_recv = 0


class FakeTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: Any) -> None:
        self.written.append(bytes(data))


@pytest.mark.parametrize("size", [0, 100, 4088, 10000])
def test_py_amqp_publish_decodes_identically(codec: ModuleType, size: int) -> None:
    """py-amqp's frame writer (its one-buffer and its many-frame paths) read by FrameDecoder."""
    transport = FakeTransport()
    write = frame_writer(FakeConnection(4096), transport)
    body = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    properties = dict(ALL_PROPERTIES)
    headers = dict(RICH_TABLE, tuple=[1, "two"], raw="bytes")
    message = Message(body, application_headers=headers, **properties)
    write(1, 7, spec.Basic.Publish, dumps("Bssbb", (0, "ex", "rk", True, False)), message)
    (event,) = codec.FrameDecoder(4096).feed(b"".join(transport.written))
    channel, method, args, delivery = event
    assert (channel, method, args) == (7, codec.BASIC_PUBLISH, ("ex", "rk", True, False))
    assert delivery.body == body
    assert delivery.properties == properties
    assert naive(delivery.headers) == naive(headers)


def split_frames(data: bytes) -> list[tuple[int, int, bytes]]:
    frames = []
    pos = 0
    while pos < len(data):
        frame_type, channel, size = struct.unpack_from(">BHI", data, pos)
        frames.append((frame_type, channel, data[pos + 7 : pos + 7 + size]))
        pos += 8 + size
    return frames


@pytest.mark.parametrize("size", [0, 100, 10000])
def test_our_messages_read_by_py_amqp(codec: ModuleType, size: int) -> None:
    """A delivery we encode, read by py-amqp's frame handler as Celery's worker reads it."""
    body = b"b" * size
    headers = dict(RICH_TABLE)
    message = codec.encode_message(3, "ex", "rk", False, body, ALL_PROPERTIES, headers, 4096)
    deliver = codec.encode_method(3, codec.BASIC_DELIVER, ("None1", 9, True, "ex", "rk"))
    frames = split_frames(deliver) + split_frames(message)[1:]
    seen: list[tuple[Any, ...]] = []
    on_frame = frame_handler(FakeConnection(4096), lambda *event: seen.append(event))
    for frame in frames:
        on_frame(frame)
    ((channel, method_sig, args, msg),) = seen
    assert (channel, method_sig) == (3, spec.Basic.Deliver)
    assert loads("sLbss", args, 4)[0] == ["None1", 9, True, "ex", "rk"]
    assert (msg.body or b"") == body  # py-amqp leaves a bodyless message's body as ""
    expected = dict(ALL_PROPERTIES, application_headers=naive(headers))
    assert msg.properties == expected
    # and the same delivery through our own decoder
    (delivery,) = codec.FrameDecoder(4096).feed(
        deliver + message[len(split_frames(message)[0][2]) + 8 :]
    )
    assert isinstance(delivery, Delivery)
    assert (delivery.body, delivery.properties) == (body, ALL_PROPERTIES)


# -- pamqp -----------------------------------------------------------------------------------


def test_pamqp_frames_decode_identically(codec: ModuleType) -> None:
    pamqp_frame = pytest.importorskip("pamqp.frame")
    from pamqp import body as pbody
    from pamqp import commands, header

    headers = {
        "tiny": -5,  # b
        "short": -300,  # s
        "ushort": 60000,  # u
        "int": -70000,  # I
        "uint": 3000000000,  # i
        "long": -(2**40),  # l
        "text": "caf\u00e9",
        "flag": True,
        "dec": Decimal("3.25"),
        "when": datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC),
        "nested": {"list": [1, "a", None]},
    }
    when = datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    props = commands.Basic.Properties(
        content_type="application/json",
        content_encoding="utf-8",
        headers=headers,
        delivery_mode=2,
        priority=5,
        correlation_id="cid",
        reply_to="reply",
        expiration="1000",
        message_id="mid",
        timestamp=when,
        message_type="kind",
        user_id="guest",
        app_id="app",
    )
    body = b"z" * 5000
    stream = b"".join(
        [
            pamqp_frame.marshal(commands.Basic.Deliver("ctag", 11, True, "ex", "rk"), 2),
            pamqp_frame.marshal(header.ContentHeader(0, len(body), props), 2),
            pamqp_frame.marshal(pbody.ContentBody(body[:4000]), 2),
            pamqp_frame.marshal(pbody.ContentBody(body[4000:]), 2),
            pamqp_frame.marshal(commands.Connection.Tune(2047, 131072, 60), 0),
        ]
    )
    delivery, tune = codec.FrameDecoder().feed(stream)
    assert tune == (0, codec.CONNECTION_TUNE, (2047, 131072, 60))
    assert delivery.body == body
    assert delivery.delivery_tag == 11
    assert delivery.headers == headers
    assert delivery.properties == {
        "content_type": "application/json",
        "content_encoding": "utf-8",
        "delivery_mode": 2,
        "priority": 5,
        "correlation_id": "cid",
        "reply_to": "reply",
        "expiration": "1000",
        "message_id": "mid",
        "timestamp": int(when.timestamp()),
        "type": "kind",
        "user_id": "guest",
        "app_id": "app",
    }


def test_our_frames_read_by_pamqp(codec: ModuleType) -> None:
    pamqp_frame = pytest.importorskip("pamqp.frame")
    from pamqp import commands

    headers = {k: v for k, v in RICH_TABLE.items() if k not in ("dec", "tuple", "raw")}
    headers["dec"] = Decimal("12.345")
    data = codec.encode_message(4, "ex", "rk", True, b"q" * 9000, ALL_PROPERTIES, headers, 4096)
    data += codec.encode_method(4, codec.BASIC_ACK, (77, True))
    data += codec.HEARTBEAT_FRAME
    decoded = []
    while data:
        consumed, channel, value = pamqp_frame.unmarshal(data)
        decoded.append((channel, value))
        data = data[consumed:]
    kinds = [type(value).__name__ for _, value in decoded]
    body_frames = ["ContentBody"] * 3
    assert kinds == ["Publish", "ContentHeader", *body_frames, "Ack", "Heartbeat"]
    publish = decoded[0][1]
    assert (publish.exchange, publish.routing_key, publish.mandatory) == ("ex", "rk", True)
    content = decoded[1][1]
    assert content.body_size == 9000
    props = content.properties
    for name, value in ALL_PROPERTIES.items():
        if name == "timestamp":
            assert props.timestamp == datetime.fromtimestamp(value, UTC)
        else:
            assert getattr(props, "message_type" if name == "type" else name) == value, name
    assert naive(props.headers) == naive(headers)
    assert b"".join(value.value for _, value in decoded[2:5]) == b"q" * 9000
    ack = decoded[5][1]
    assert isinstance(ack, commands.Basic.Ack)
    assert (ack.delivery_tag, ack.multiple) == (77, True)


# -- RabbitMQ itself -------------------------------------------------------------------------


class Broker:
    """A raw socket to RabbitMQ driven only by the codec under test."""

    def __init__(self, codec: ModuleType, sock: socket.socket) -> None:
        self.codec = codec
        self.sock = sock
        self.decoder = codec.FrameDecoder()
        self.pending: list[Any] = []

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def call(self, channel: int, method: int, args: tuple[Any, ...]) -> Any:
        self.send(self.codec.encode_method(channel, method, args))
        return self.next_event()

    def next_event(self) -> Any:
        while not self.pending:
            data = self.sock.recv(65536)
            assert data, "the broker closed the connection"
            self.pending += [e for e in self.decoder.feed(data) if e is not self.codec.HEARTBEAT]
        return self.pending.pop(0)


@pytest.mark.integration
def test_rabbitmq_round_trip(codec: ModuleType) -> None:
    """Handshake, declare, publish and basic.get against RabbitMQ with nothing but the codec:
    the broker accepts every encoding (I, L, D, T, nested F and A, bytes as S) and hands the
    message back unchanged, over several body frames."""
    host = os.environ.get("CELERIAC_TEST_AMQP_HOST", "127.0.0.1")
    try:
        sock = socket.create_connection((host, 5672), timeout=10)
    except OSError as exc:
        pytest.fail(
            f"RabbitMQ does not answer on {host}:5672 ({exc}); start it with "
            f"`rabbitmq-server -detached`"
        )
    c = codec
    broker = Broker(c, sock)
    try:
        broker.send(c.PROTOCOL_HEADER)
        channel, method, (major, minor, server, mechanisms, _locales) = broker.next_event()
        assert (channel, method, major, minor) == (0, c.CONNECTION_START, 0, 9)
        assert server["product"] == "RabbitMQ"
        assert server["capabilities"]["publisher_confirms"] is True
        assert b"PLAIN" in mechanisms.split()
        broker.send(
            c.encode_method(
                0,
                c.CONNECTION_START_OK,
                ({"product": "celeriac-test"}, "PLAIN", b"\x00guest\x00guest", "en_US"),
            )
        )
        _, method, (channel_max, frame_max, _heartbeat) = broker.next_event()
        assert method == c.CONNECTION_TUNE
        broker.send(c.encode_method(0, c.CONNECTION_TUNE_OK, (channel_max, frame_max, 0)))
        broker.decoder.frame_max = frame_max
        assert broker.call(0, c.CONNECTION_OPEN, ("/",)) == (0, c.CONNECTION_OPEN_OK, ())
        assert broker.call(1, c.CHANNEL_OPEN, ()) == (1, c.CHANNEL_OPEN_OK, ())
        queue = f"celeriac-codec-{uuid.uuid4().hex[:12]}"
        declare = (queue, False, False, False, True, False, {"x-message-ttl": 60000})
        assert broker.call(1, c.QUEUE_DECLARE, declare) == (
            1,
            c.QUEUE_DECLARE_OK,
            (queue, 0, 0),
        )
        headers = dict(RICH_TABLE, dec=Decimal("-12.345"), when=datetime(2024, 1, 2, tzinfo=UTC))
        body = bytes(range(256)) * 1000  # 256,000 bytes: several frames at any frame_max
        message = c.encode_message(1, "", queue, True, body, ALL_PROPERTIES, headers, frame_max)
        broker.send(message)
        channel, method, args, delivery = broker.call(1, c.BASIC_GET, (queue, True))
        assert (channel, method) == (1, c.BASIC_GET_OK)
        assert args[1:] == (False, "", queue, 0)
        assert delivery.body == body
        assert delivery.properties == ALL_PROPERTIES
        assert naive(delivery.headers) == naive(headers)
        assert broker.call(1, c.QUEUE_DELETE, (queue, False, False, False)) == (
            1,
            c.QUEUE_DELETE_OK,
            (0,),
        )
        assert broker.call(1, c.CHANNEL_CLOSE, (200, "bye", 0, 0)) == (1, c.CHANNEL_CLOSE_OK, ())
        assert broker.call(0, c.CONNECTION_CLOSE, (200, "bye", 0, 0)) == (
            0,
            c.CONNECTION_CLOSE_OK,
            (),
        )
    finally:
        sock.close()
