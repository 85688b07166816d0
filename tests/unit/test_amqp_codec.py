"""The AMQP 0-9-1 codec, run against the compiled module and its pure twin."""

from __future__ import annotations

import enum
import struct
from collections import OrderedDict
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from types import ModuleType
from typing import Any

import pytest

from celeriac.errors import ProtocolError
from celeriac.transports.base import Delivery
from tests.conftest import ImplLoader

UTC = timezone.utc


@pytest.fixture
def codec(impl: ImplLoader) -> ModuleType:
    return impl("amqp_codec")


def sample_args(c: ModuleType) -> dict[int, tuple[Any, ...]]:
    """Arguments for every method of the contract, with every field non-default."""
    return {
        c.CONNECTION_START: (
            0,
            9,
            {"product": "RabbitMQ", "capabilities": {"publisher_confirms": True}},
            b"AMQPLAIN PLAIN",
            b"en_US",
        ),
        c.CONNECTION_START_OK: (
            {"product": "celeriac"},
            "PLAIN",
            b"\x00guest\x00guest",
            "en_US",
        ),
        c.CONNECTION_SECURE: (b"challenge\xff",),
        c.CONNECTION_SECURE_OK: (b"response\x00",),
        c.CONNECTION_TUNE: (2047, 131072, 60),
        c.CONNECTION_TUNE_OK: (65535, 4096, 0),
        c.CONNECTION_OPEN: ("/vhost",),
        c.CONNECTION_OPEN_OK: (),
        c.CONNECTION_CLOSE: (320, "CONNECTION_FORCED - shutdown", 0, 0),
        c.CONNECTION_CLOSE_OK: (),
        c.CONNECTION_BLOCKED: ("low on memory",),
        c.CONNECTION_UNBLOCKED: (),
        c.CHANNEL_OPEN: (),
        c.CHANNEL_OPEN_OK: (),
        c.CHANNEL_FLOW: (True,),
        c.CHANNEL_FLOW_OK: (False,),
        c.CHANNEL_CLOSE: (404, "NOT_FOUND - no queue 'x'", 50, 10),
        c.CHANNEL_CLOSE_OK: (),
        c.EXCHANGE_DECLARE: ("celery", "direct", False, True, False, True, False, {"a": 1}),
        c.EXCHANGE_DECLARE_OK: (),
        c.EXCHANGE_DELETE: ("celery", True, False),
        c.EXCHANGE_DELETE_OK: (),
        c.QUEUE_DECLARE: ("celery", False, True, False, True, False, {"x-max-priority": 10}),
        c.QUEUE_DECLARE_OK: ("celery", 12, 3),
        c.QUEUE_BIND: ("celery", "celery", "celery.rk", True, {"x-match": "all"}),
        c.QUEUE_BIND_OK: (),
        c.QUEUE_PURGE: ("celery", False),
        c.QUEUE_PURGE_OK: (4294967295,),
        c.QUEUE_DELETE: ("celery", True, False, True),
        c.QUEUE_DELETE_OK: (7,),
        c.QUEUE_UNBIND: ("celery", "ex", "rk", {}),
        c.QUEUE_UNBIND_OK: (),
        c.BASIC_QOS: (0, 65535, True),
        c.BASIC_QOS_OK: (),
        c.BASIC_CONSUME: ("celery", "None1", False, True, False, False, {"x-priority": -1}),
        c.BASIC_CONSUME_OK: ("None1",),
        c.BASIC_CANCEL: ("None1", True),
        c.BASIC_CANCEL_OK: ("None1",),
        c.BASIC_PUBLISH: ("ex", "rk", True, False),
        c.BASIC_RETURN: (312, "NO_ROUTE", "ex", "rk"),
        c.BASIC_DELIVER: ("None1", 2**64 - 1, True, "", "celery"),
        c.BASIC_GET: ("celery", True),
        c.BASIC_GET_OK: (1, False, "", "celery", 41),
        c.BASIC_GET_EMPTY: (),
        c.BASIC_ACK: (17, True),
        c.BASIC_REJECT: (18, False),
        c.BASIC_RECOVER_ASYNC: (True,),
        c.BASIC_RECOVER: (False,),
        c.BASIC_RECOVER_OK: (),
        c.BASIC_NACK: (19, True, False),
        c.CONFIRM_SELECT: (False,),
        c.CONFIRM_SELECT_OK: (),
    }


def frame(frame_type: int, channel: int, payload: bytes, end: int = 0xCE) -> bytes:
    return struct.pack(">BHI", frame_type, channel, len(payload)) + payload + bytes([end])


def method_frame(c: ModuleType, channel: int, method: int, args: tuple[Any, ...]) -> bytes:
    return bytes(c.encode_method(channel, method, args))


def header_frame(
    channel: int, body_size: int, props: bytes = b"\x00\x00", class_id: int = 60
) -> bytes:
    return frame(2, channel, struct.pack(">HHQ", class_id, 0, body_size) + props)


def deliver(c: ModuleType, tag: int = 1, body: bytes = b"{}", channel: int = 1) -> bytes:
    """A complete basic.deliver with a small header and a one-frame body."""
    props = c.encode_properties({"content_type": "application/json"}, {"task": "t"})
    stream = method_frame(c, channel, c.BASIC_DELIVER, ("ctag", tag, False, "ex", "rk"))
    stream += header_frame(channel, len(body), props)
    if body:
        stream += frame(3, channel, body)
    return stream


def error(func: Any, *args: Any) -> str:
    with pytest.raises(ProtocolError) as info:
        func(*args)
    return str(info.value)


# -- constants and methods --------------------------------------------------------------------


def test_constants(codec: ModuleType) -> None:
    assert codec.PROTOCOL_HEADER == b"AMQP\x00\x00\x09\x01"
    assert (codec.FRAME_METHOD, codec.FRAME_HEADER, codec.FRAME_BODY) == (1, 2, 3)
    assert (codec.FRAME_HEARTBEAT, codec.FRAME_END, codec.FRAME_MIN_SIZE) == (8, 0xCE, 4096)
    assert codec.HEARTBEAT_FRAME == b"\x08\x00\x00\x00\x00\x00\x00\xce"
    assert codec.BASIC_DELIVER == 60 << 16 | 60
    assert codec.METHOD_NAMES[codec.BASIC_DELIVER] == "basic.deliver"
    assert codec.METHOD_NAMES[codec.CONNECTION_START_OK] == "connection.start-ok"
    assert set(codec.METHOD_NAMES) == set(sample_args(codec))
    assert repr(codec.HEARTBEAT) == "HEARTBEAT"


def test_every_method_round_trips(codec: ModuleType) -> None:
    for method, args in sample_args(codec).items():
        data = codec.encode_method(5, method, args)
        assert type(data) is bytes
        assert data[:3] == b"\x01\x00\x05" and data[-1] == 0xCE
        (size,) = struct.unpack_from(">I", data, 3)
        assert size == len(data) - 8
        assert codec.decode_method(data[7:-1]) == (method, args), codec.METHOD_NAMES[method]
        assert codec.decode_method(memoryview(data)[7:-1]) == (method, args)
        assert codec.decode_method(bytearray(data[7:-1])) == (method, args)


def test_method_wire_layout(codec: ModuleType) -> None:
    # reserved ticket, shortstrs, then the bits packed into one octet, low bit first
    data = codec.encode_method(1, codec.QUEUE_DECLARE, ("q", False, True, False, True, True, {}))
    assert data[7:-1] == b"\x00\x32\x00\x0a\x00\x00\x01q\x1a\x00\x00\x00\x00"
    data = codec.encode_method(0, codec.CONNECTION_OPEN, ("/",))
    assert data[7:-1] == b"\x00\x0a\x00\x28\x01/\x00\x00"
    data = codec.encode_method(1, codec.BASIC_ACK, (2**40, True))
    assert data[7:-1] == b"\x00\x3c\x00\x50" + (2**40).to_bytes(8, "big") + b"\x01"
    data = codec.encode_method(1, codec.CHANNEL_OPEN_OK, ())
    assert data[7:-1] == b"\x00\x14\x00\x0b\x00\x00\x00\x00"


def test_method_args_conventions(codec: ModuleType) -> None:
    # a list is taken as the tuple, None as an empty table, truthy values as bits
    data = codec.encode_method(1, codec.QUEUE_BIND, ["q", "ex", "rk", 1, None])
    assert codec.decode_method(data[7:-1]) == (codec.QUEUE_BIND, ("q", "ex", "rk", True, {}))
    data = codec.encode_method(1, codec.BASIC_PUBLISH, (b"ex", "r\u00e9", 0, 0))
    assert codec.decode_method(data[7:-1])[1] == ("ex", "r\u00e9", False, False)


@pytest.mark.parametrize(
    ("method", "args", "message"),
    [
        ("BASIC_ACK", (1,), "cannot encode basic.ack: takes 2 arguments (delivery_tag, "),
        ("BASIC_ACK", (-1, False), "basic.ack argument delivery_tag: -1 is not an int in 0.."),
        ("BASIC_ACK", (2**64, False), "delivery_tag: 18446744073709551616 is not an int in"),
        ("BASIC_ACK", ("1", False), "delivery_tag: '1' is not an int in 0..18446744073709551615"),
        ("BASIC_QOS", (0, 65536, False), "prefetch_count: 65536 is not an int in 0..65535"),
        ("CONNECTION_OPEN", (None,), "connection.open argument virtual_host: NoneType, not str"),
        ("QUEUE_PURGE", ("q" * 256, False), "queue: 256 bytes, over the shortstr limit of 255"),
        ("QUEUE_DECLARE", ("q", 0, 0, 0, 0, 0, []), "arguments: list, not a mapping"),
        ("QUEUE_DECLARE", ("q", 0, 0, 0, 0, 0, {"k": {1}}), "type set for key 'k'"),
        ("CONNECTION_SECURE", (3,), "challenge: int, not str or bytes"),
        ("BASIC_CANCEL", "None1", "arguments must be a tuple, not str"),
        ("CONNECTION_OPEN", ("\ud800",), "virtual_host: not encodable as utf-8"),
    ],
)
def test_encode_method_rejects(codec: ModuleType, method: str, args: Any, message: str) -> None:
    assert message in error(codec.encode_method, 1, getattr(codec, method), args)


def test_encode_method_rejects_unknown_method_and_channel(codec: ModuleType) -> None:
    assert error(codec.encode_method, 1, 123, ()) == "cannot encode unknown method 123"
    assert "channel 65536" in error(codec.encode_method, 65536, codec.BASIC_QOS_OK, ())
    assert "channel -1" in error(codec.encode_method, -1, codec.BASIC_QOS_OK, ())


def test_decode_method_errors(codec: ModuleType) -> None:
    assert error(codec.decode_method, b"\x00\x3c") == (
        "truncated method frame payload: 2 bytes, needs at least 4"
    )
    assert error(codec.decode_method, b"\x00\x3c\x00\x63") == "unknown method class 60 method 99"
    full = codec.encode_method(1, codec.BASIC_DELIVER, ("ctag", 1, True, "ex", "rk"))[7:-1]
    for cut in range(4, len(full)):
        message = error(codec.decode_method, full[:cut])
        assert message.startswith("cannot decode basic.deliver: truncated "), message
    assert error(codec.decode_method, full + b"\x00\x00") == (
        "cannot decode basic.deliver: 2 unexpected bytes after the arguments at offset 24"
    )
    assert error(codec.decode_method, b"\x00\x3c\x00\x15\x01\xff") == (
        "cannot decode basic.consume-ok: invalid utf-8 in shortstr at offset 5"
    )
    assert error(codec.decode_method, b"\x00\x3c\x00\x15\x05ab") == (
        "cannot decode basic.consume-ok: truncated shortstr at offset 5: needs 5 bytes, 2 left"
    )
    bad_text = b"\x00\x14\x00\x28\x00\xc8\x02\xc3\x28\x00\x00\x00\x00"
    assert error(codec.decode_method, bad_text) == (
        "cannot decode channel.close: invalid utf-8 in shortstr at offset 7"
    )


# -- field tables ----------------------------------------------------------------------------


def test_table_every_encoded_type_round_trips(codec: ModuleType) -> None:
    table = {
        "str": "text",
        "unicode": "\u00e9t\u00e9 \U0001f600",
        "\u00e9\u00e8": "unicode key",
        "bytes": b"raw",
        "true": True,
        "false": False,
        "int": 2147483647,
        "neg": -2147483647,
        "big": 2147483648,
        "small": -2147483648,
        "max": 2**63 - 1,
        "min": -(2**63),
        "float": 1.5,
        "dec": Decimal("-3.14159"),
        "dec_int": Decimal("42"),
        "when": datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC),
        "nested": {"a": {"b": {"c": [1, "x", None]}}},
        "array": [1, 2.5, "s", None, True, {"k": "v"}, [[]]],
        "none": None,
        "empty_table": {},
        "empty_array": [],
        "": "empty key",
    }
    expected = dict(table, bytes="raw")  # valid UTF-8 comes back as str
    decoded = codec.decode_table(codec.encode_table(table))
    assert decoded == expected
    assert type(decoded["true"]) is bool
    assert decoded["when"].tzinfo is not None
    assert str(decoded["dec"]) == "-3.14159"


def test_table_encoding_rules(codec: ModuleType) -> None:
    def value(v: Any) -> bytes:
        return bytes(codec.encode_table({"k": v}))[6:]

    assert value("ab") == b"S\x00\x00\x00\x02ab"
    assert value(b"ab") == b"S\x00\x00\x00\x02ab"
    assert value(True) == b"t\x01"
    assert value(5) == b"I\x00\x00\x00\x05"
    assert value(-2147483647) == b"I\x80\x00\x00\x01"
    # py-amqp's bound: -2**31 itself goes out as L
    assert value(-(2**31)) == b"L" + (-(2**31)).to_bytes(8, "big", signed=True)
    assert value(2**31) == b"L" + (2**31).to_bytes(8, "big")
    assert value(0.5) == b"d" + struct.pack(">d", 0.5)
    assert value(Decimal("1.50")) == b"D\x02\x00\x00\x00\x96"
    assert value(Decimal("-1E+2")) == b"D\x00\xff\xff\xff\x9c"
    assert value(None) == b"V"
    assert value((1,)) == b"A\x00\x00\x00\x05I\x00\x00\x00\x01"
    assert value({}) == b"F\x00\x00\x00\x00"
    when = datetime(2001, 9, 9, 1, 46, 40, 999999)
    assert value(when) == b"T" + (10**9).to_bytes(8, "big")  # naive is UTC, fraction dropped
    aware = datetime(2001, 9, 9, 3, 46, 40, tzinfo=timezone(timedelta(hours=2)))
    assert value(aware) == b"T" + (10**9).to_bytes(8, "big")


def test_table_subclasses_and_mappings(codec: ModuleType) -> None:
    class Color(enum.IntEnum):
        RED = 3

    class Name(str):
        pass

    table = OrderedDict([(Name("n"), Name("v")), ("e", Color.RED), ("m", OrderedDict(a=1))])
    decoded = codec.decode_table(codec.encode_table(table))
    assert decoded == {"n": "v", "e": 3, "m": {"a": 1}}
    assert type(decoded["e"]) is int and type(decoded["m"]) is dict
    assert codec.encode_table(None) == b"\x00\x00\x00\x00"
    assert codec.decode_table(b"\x00\x00\x00\x00") == {}


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"k": {1, 2}}, "cannot encode a value of type set for key 'k': field tables take"),
        ({"outer": {"inner": object()}}, "value of type object for key 'inner'"),
        ({"arr": [1, 1j]}, "value of type complex for key 'arr'"),
        ({1: "v"}, "cannot encode field name 1: int, not str"),
        ({"k" * 256: 1}, "256 bytes, over the shortstr limit of 255"),
        ({"k": 2**63}, "cannot encode int 9223372036854775808 for key 'k': outside the signed"),
        ({"k": -(2**63) - 1}, "outside the signed 64-bit range"),
        ({"k": Decimal("NaN")}, "cannot encode Decimal NaN for key 'k': not finite"),
        ({"k": Decimal("1E-256")}, "needs a scale of 0..255 and a signed 32-bit"),
        ({"k": Decimal("2147483648")}, "needs a scale of 0..255 and a signed 32-bit"),
        ({"k": datetime(1969, 12, 31, tzinfo=UTC)}, "before 1970"),
        ({"k": "\udc80"}, "cannot encode the value for key 'k': not encodable as utf-8"),
    ],
)
def test_encode_table_rejects(codec: ModuleType, table: Any, message: str) -> None:
    assert message in error(codec.encode_table, table)


def test_encode_table_depth_limit(codec: ModuleType) -> None:
    table: dict[str, Any] = {}
    inner = table
    for _ in range(codec.MAX_TABLE_DEPTH - 1):
        inner["k"] = inner = {}
    codec.encode_table(table)
    inner["k"] = {}
    assert "nested deeper than 100" in error(codec.encode_table, table)
    loop: list[Any] = []
    loop.append(loop)
    assert "nested deeper than 100" in error(codec.encode_table, {"k": loop})


def raw_table(*items: bytes) -> bytes:
    body = b"".join(items)
    return struct.pack(">I", len(body)) + body


def test_decode_every_wire_type(codec: ModuleType) -> None:
    data = raw_table(
        b"\x01SS\x00\x00\x00\x02hi",
        b"\x01ss\xff\xfe",  # RabbitMQ errata: signed 16-bit
        b"\x01xx\x00\x00\x00\x02\x00\xff",
        b"\x01bb\xff",  # signed
        b"\x01BB\xff",
        b"\x01UU\x80\x00",
        b"\x01uu\xff\xff",
        b"\x01II\xff\xff\xff\xff",
        b"\x01ii\xff\xff\xff\xff",
        b"\x01LL\xff\xff\xff\xff\xff\xff\xff\xfe",
        b"\x01ll\xff\xff\xff\xff\xff\xff\xff\xff",  # signed (x-death count, x-delay)
        b"\x01ff" + struct.pack(">f", 0.25),
        b"\x01dd" + struct.pack(">d", -1e300),
        b"\x01DD\x03\xff\xff\xff\xff",
        b"\x01FF" + raw_table(b"\x01aV"),
        b"\x01AA" + raw_table(b"t\x00", b"t\x02"),
        b"\x01tt\x01",
        b"\x01TT\x00\x00\x00\x00\x65\x53\xf1\x00",
        b"\x01VV",
        b"\x01\xffV",  # a key that is not UTF-8 reads as bytes, like py-amqp
        b"\x01zS\x00\x00\x00\x01\xff",  # so does an S value
    )
    assert codec.decode_table(data) == {
        "S": "hi",
        "s": -2,
        "x": b"\x00\xff",
        "b": -1,
        "B": 255,
        "U": -32768,
        "u": 65535,
        "I": -1,
        "i": 4294967295,
        "L": -2,
        "l": -1,
        "f": 0.25,
        "d": -1e300,
        "D": Decimal("-0.001"),
        "F": {"a": None},
        "A": [False, True],
        "t": True,
        "T": datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC),
        "V": None,
        b"\xff": None,
        "z": b"\xff",
    }


def test_decode_table_errors(codec: ModuleType) -> None:
    valid = bytes(codec.encode_table({"a": [1, "two", {"b": 2.5}], "c": Decimal("1.1")}))
    for cut in range(len(valid)):
        assert error(codec.decode_table, valid[:cut]).startswith("cannot decode field table: ")
    assert error(codec.decode_table, valid + b"\x00") == (
        f"cannot decode field table: 1 unexpected bytes after it at offset {len(valid)}"
    )
    assert error(codec.decode_table, b"") == (
        "cannot decode field table: truncated field table at offset 0: needs 4 bytes, 0 left"
    )
    assert error(codec.decode_table, b"\x00\x00\x00\x05\x01a") == (
        "cannot decode field table: field table at offset 0 declares 5 bytes, only 2 left"
    )
    assert error(codec.decode_table, raw_table(b"\x01aZ")) == (
        "cannot decode field table: unknown field value type 0x5a at offset 6"
    )
    assert error(codec.decode_table, raw_table(b"\x01a")) == (
        "cannot decode field table: truncated field value at offset 6: needs 1 bytes, 0 left"
    )
    assert error(codec.decode_table, raw_table(b"\x01aI\x00\x00")) == (
        "cannot decode field table: truncated long at offset 7: needs 4 bytes, 2 left"
    )
    assert error(codec.decode_table, raw_table(b"\x05a")) == (
        "cannot decode field table: truncated field name at offset 5: needs 5 bytes, 1 left"
    )
    assert error(codec.decode_table, raw_table(b"\x01aA\x00\x00\x00\x09I")) == (
        "cannot decode field table: field array at offset 7 declares 9 bytes, only 1 left"
    )
    big = b"\x01aT" + b"\xff" * 8
    assert error(codec.decode_table, raw_table(big)) == (
        "cannot decode field table: timestamp 18446744073709551615 out of range at offset 7"
    )


def test_decode_table_depth_limit(codec: ModuleType) -> None:
    def nest(levels: int) -> bytes:
        data = raw_table()
        for _ in range(levels - 1):
            data = raw_table(b"\x01kF" + data)
        return data

    assert codec.decode_table(nest(codec.MAX_TABLE_DEPTH))
    message = error(codec.decode_table, nest(codec.MAX_TABLE_DEPTH + 1))
    assert "field tables nested deeper than 100 levels at offset" in message
    # far deeper than the C stack could take: refused, not a crash
    assert "nested deeper" in error(codec.decode_table, nest(20000))


# -- basic properties ------------------------------------------------------------------------


ALL_PROPERTIES = {
    "content_type": "application/json",
    "content_encoding": "utf-8",
    "delivery_mode": 2,
    "priority": 9,
    "correlation_id": "cid",
    "reply_to": "reply.queue",
    "expiration": "60000",
    "message_id": "mid",
    "timestamp": 1700000000,
    "type": "kind",
    "user_id": "guest",
    "app_id": "app",
    "cluster_id": "cluster",
}


def test_properties_round_trip(codec: ModuleType) -> None:
    data = codec.encode_properties(ALL_PROPERTIES, {"task": "t", "retries": 0})
    assert data[:2] == b"\xff\xfc"
    assert codec.decode_properties(data) == (ALL_PROPERTIES, {"task": "t", "retries": 0})
    assert codec.decode_properties(memoryview(data)) == (
        ALL_PROPERTIES,
        {"task": "t", "retries": 0},
    )
    assert codec.encode_properties({}, None) == b"\x00\x00"
    assert codec.decode_properties(b"\x00\x00") == ({}, None)
    assert codec.decode_properties(codec.encode_properties({}, {})) == ({}, {})


def test_properties_flags_only_for_set_values(codec: ModuleType) -> None:
    props = {"content_type": "a", "priority": None, "delivery_mode": 2, "other": object()}
    data = codec.encode_properties(props, None)
    assert data == b"\x90\x00\x01a\x02"
    assert codec.decode_properties(data) == ({"content_type": "a", "delivery_mode": 2}, None)
    data = codec.encode_properties({"timestamp": 0, "cluster_id": ""}, {})
    assert data == b"\x20\x44\x00\x00\x00\x00" + b"\x00" * 8 + b"\x00"


@pytest.mark.parametrize(
    ("props", "headers", "message"),
    [
        ({"priority": 256}, None, "cannot encode property priority: 256 is not an int in 0..255"),
        ({"delivery_mode": "2"}, None, "property delivery_mode: '2' is not an int"),
        ({"timestamp": -1}, None, "property timestamp: -1 is not an int in 0.."),
        ({"reply_to": 5}, None, "cannot encode property reply_to: int, not str"),
        ({"message_id": "x" * 300}, None, "300 bytes, over the shortstr limit of 255"),
        ({}, {"k": set()}, "cannot encode headers: cannot encode a value of type set for key"),
        ({}, [("k", 1)], "cannot encode headers: list, not a mapping"),
        ([("content_type", "x")], None, "cannot encode properties: list, not a mapping"),
    ],
)
def test_encode_properties_rejects(
    codec: ModuleType, props: Any, headers: Any, message: str
) -> None:
    assert message in error(codec.encode_properties, props, headers)


def test_decode_properties_errors(codec: ModuleType) -> None:
    valid = bytes(codec.encode_properties(ALL_PROPERTIES, {"a": 1}))
    for cut in range(len(valid)):
        assert error(codec.decode_properties, valid[:cut]).startswith("cannot decode properties:")
    assert error(codec.decode_properties, b"\x00\x01") == (
        "cannot decode properties: unknown property flags 0x0001"
    )
    assert error(codec.decode_properties, b"\x00\x02") == (
        "cannot decode properties: unknown property flags 0x0002"
    )
    assert error(codec.decode_properties, b"\x80\x00\x00\x00") == (
        "cannot decode properties: 1 unexpected bytes after them at offset 3"
    )
    assert error(codec.decode_properties, b"\x80\x00\x01\xff") == (
        "cannot decode properties: invalid utf-8 in shortstr at offset 3"
    )


# -- encode_message --------------------------------------------------------------------------


def split_frames(data: bytes) -> list[tuple[int, int, bytes]]:
    frames = []
    pos = 0
    while pos < len(data):
        frame_type, channel, size = struct.unpack_from(">BHI", data, pos)
        assert data[pos + 7 + size] == 0xCE
        frames.append((frame_type, channel, data[pos + 7 : pos + 7 + size]))
        pos += 8 + size
    return frames


def test_encode_message_frames(codec: ModuleType) -> None:
    body = bytes(range(256)) * 40  # 10240 bytes: three frames at frame_max 4096
    props = {"content_type": "application/json", "delivery_mode": 2, "priority": None}
    data = codec.encode_message(3, "ex", "rk", True, body, props, {"id": "x"}, 4096)
    assert type(data) is bytes
    frames = split_frames(data)
    assert [(f[0], f[1]) for f in frames] == [(1, 3), (2, 3), (3, 3), (3, 3), (3, 3)]
    assert codec.decode_method(frames[0][2]) == (codec.BASIC_PUBLISH, ("ex", "rk", True, False))
    class_id, weight, size = struct.unpack_from(">HHQ", frames[1][2])
    assert (class_id, weight, size) == (60, 0, len(body))
    assert codec.decode_properties(frames[1][2][12:]) == (
        {"content_type": "application/json", "delivery_mode": 2},
        {"id": "x"},
    )
    assert [len(f[2]) for f in frames[2:]] == [4088, 4088, 2064]
    assert b"".join(f[2] for f in frames[2:]) == body
    exact = codec.encode_message(1, "", "q", False, b"x" * 4088, {}, None, 4096)
    assert [len(f[2]) for f in split_frames(exact)] == [10, 14, 4088]


def test_encode_message_empty_body_has_no_body_frame(codec: ModuleType) -> None:
    data = codec.encode_message(1, "", "q", False, b"", {}, None, 131072)
    frames = split_frames(data)
    assert [f[0] for f in frames] == [1, 2]
    assert frames[1][2] == b"\x00\x3c\x00\x00" + b"\x00" * 8 + b"\x00\x00"


def test_encode_message_rejects(codec: ModuleType) -> None:
    huge = {f"h{i}": "v" * 200 for i in range(30)}
    message = error(codec.encode_message, 1, "", "q", False, b"", {}, huge, 4096)
    assert message.startswith("cannot encode basic.publish: the content header frame is ")
    assert message.endswith("bytes, over frame_max 4096")
    assert "body is str, not bytes" in error(
        codec.encode_message, 1, "", "q", False, "text", {}, None, 4096
    )
    assert "routing_key: 300 bytes" in error(
        codec.encode_message, 1, "", "q" * 300, False, b"", {}, None, 4096
    )
    for bad in (4095, 2**32, "4096", 0):
        with pytest.raises(ValueError, match=r"frame_max must be an int in 4096\.\.4294967295"):
            codec.encode_message(1, "", "q", False, b"", {}, None, bad)
    data = codec.encode_message(1, "", "q", False, bytearray(b"ab"), {}, None, 4096)
    assert split_frames(data)[2][2] == b"ab"


# -- FrameDecoder ----------------------------------------------------------------------------


def feed_all(decoder: Any, data: bytes, step: int | None = None) -> list[Any]:
    if step is None:
        return list(decoder.feed(data))
    events: list[Any] = []
    for pos in range(0, len(data), step):
        events += decoder.feed(data[pos : pos + step])
    return events


def same_delivery(a: Delivery, b: Delivery) -> bool:
    return (a.body, a.headers, a.properties, a.delivery_info, a.delivery_tag) == (
        b.body,
        b.headers,
        b.properties,
        b.delivery_info,
        b.delivery_tag,
    )


def test_decoder_delivery(codec: ModuleType) -> None:
    props = dict(ALL_PROPERTIES)
    message = codec.encode_message(2, "ex", "rk", False, b"body", props, {"task": "t"}, 4096)
    stream = method_frame(codec, 2, codec.BASIC_DELIVER, ("None1", 42, True, "ex", "rk"))
    stream += message[len(split_frames(message)[0][2]) + 8 :]
    (event,) = codec.FrameDecoder().feed(stream)
    assert type(event) is Delivery
    assert event.body == b"body" and type(event.body) is bytes
    assert event.headers == {"task": "t"}
    assert event.properties == props
    assert event.delivery_tag == 42
    assert event.delivery_info == {
        "exchange": "ex",
        "routing_key": "rk",
        "redelivered": True,
        "consumer_tag": "None1",
        "channel": 2,
    }


def test_decoder_other_events(codec: ModuleType) -> None:
    props = codec.encode_properties({"reply_to": "r"}, None)
    stream = b"".join(
        [
            method_frame(codec, 0, codec.CONNECTION_TUNE, (2047, 131072, 60)),
            codec.HEARTBEAT_FRAME,
            method_frame(codec, 1, codec.BASIC_GET_OK, (7, False, "ex", "rk", 3)),
            header_frame(1, 3, props),
            frame(3, 1, b"abc"),
            method_frame(codec, 1, codec.BASIC_RETURN, (312, "NO_ROUTE", "ex", "rk")),
            header_frame(1, 0),
            method_frame(codec, 1, codec.BASIC_PUBLISH, ("ex", "rk", True, False)),
            header_frame(1, 1),
            frame(3, 1, b"z"),
            method_frame(codec, 1, codec.BASIC_CANCEL, ("None1", True)),
        ]
    )
    events = codec.FrameDecoder().feed(stream)
    assert events[0] == (0, codec.CONNECTION_TUNE, (2047, 131072, 60))
    assert events[1] is codec.HEARTBEAT
    channel, method, args, delivery = events[2]
    assert (channel, method, args) == (1, codec.BASIC_GET_OK, (7, False, "ex", "rk", 3))
    assert (delivery.body, delivery.properties, delivery.headers) == (
        b"abc",
        {"reply_to": "r"},
        None,
    )
    assert delivery.delivery_tag == 7
    assert delivery.delivery_info == {
        "exchange": "ex",
        "routing_key": "rk",
        "redelivered": False,
        "consumer_tag": None,
        "channel": 1,
        "message_count": 3,
    }
    channel, method, args, delivery = events[3]
    assert (method, args, delivery.body, delivery.delivery_tag) == (
        codec.BASIC_RETURN,
        (312, "NO_ROUTE", "ex", "rk"),
        b"",
        0,
    )
    assert delivery.delivery_info["reply_code"] == 312
    assert delivery.delivery_info["reply_text"] == "NO_ROUTE"
    assert events[4][1] == codec.BASIC_PUBLISH and events[4][3].body == b"z"
    assert events[5] == (1, codec.BASIC_CANCEL, ("None1", True))
    assert len(events) == 6


def test_decoder_fragmentation(codec: ModuleType) -> None:
    body = bytes(range(256)) * 50
    stream = b"".join(
        [
            deliver(codec, 1),
            codec.HEARTBEAT_FRAME,
            method_frame(codec, 1, codec.BASIC_DELIVER, ("c", 2, False, "", "q")),
            codec.encode_message(1, "", "q", False, body, {}, {"k": "v"}, 4096)[18:],
            deliver(codec, 3, b""),
            deliver(codec, 4, b"x" * 4088, channel=9),
            method_frame(codec, 0, codec.CONNECTION_CLOSE, (320, "bye", 0, 0)),
        ]
    )
    whole = codec.FrameDecoder().feed(stream)
    assert len(whole) == 6
    assert whole[2].body == body and whole[2].headers == {"k": "v"}
    assert whole[3].body == b""
    for step in (1, 2, 3, 7, 8, 13, 100, 4095, 4097):
        parts = feed_all(codec.FrameDecoder(), stream, step)
        assert len(parts) == len(whole), step
        for got, want in zip(parts, whole, strict=True):
            if isinstance(want, Delivery):
                assert same_delivery(got, want), step
                assert type(got.body) is bytes
            else:
                assert got == want or (got is codec.HEARTBEAT and want is codec.HEARTBEAT)


def test_decoder_empty_feed_and_state(codec: ModuleType) -> None:
    decoder = codec.FrameDecoder()
    assert decoder.feed(b"") == []
    assert decoder.feed(bytearray(codec.HEARTBEAT_FRAME[:3])) == []
    assert decoder.feed(b"") == []
    assert decoder.feed(memoryview(codec.HEARTBEAT_FRAME[3:])) == [codec.HEARTBEAT]


def test_decoder_many_channels_interleaved(codec: ModuleType) -> None:
    a = [
        method_frame(codec, 1, codec.BASIC_DELIVER, ("a", 1, False, "", "q")),
        header_frame(1, 4),
        frame(3, 1, b"ab"),
        frame(3, 1, b"cd"),
    ]
    b = [
        method_frame(codec, 2, codec.BASIC_DELIVER, ("b", 1, False, "", "q")),
        header_frame(2, 2),
        frame(3, 2, b"xy"),
    ]
    stream = a[0] + b[0] + a[1] + b[1] + a[2] + b[2] + a[3]
    events = codec.FrameDecoder().feed(stream)
    assert [(e.delivery_info["channel"], e.body) for e in events] == [(2, b"xy"), (1, b"abcd")]
    # zero-length body frames inside a body are allowed
    stream = a[0] + a[1] + frame(3, 1, b"") + frame(3, 1, b"abcd")
    assert codec.FrameDecoder().feed(stream)[0].body == b"abcd"


def test_decoder_frame_max(codec: ModuleType) -> None:
    decoder = codec.FrameDecoder()
    assert decoder.frame_max == 131072
    decoder.frame_max = 4096
    assert decoder.frame_max == 4096
    with pytest.raises(ValueError, match=r"frame_max must be an int in 4096\.\.4294967295, not 10"):
        decoder.frame_max = 10
    with pytest.raises(ValueError, match=r"not 1\.5"):
        codec.FrameDecoder(1.5)
    assert decoder.frame_max == 4096
    big = frame(3, 1, b"x" * 4089)
    assert error(decoder.feed, big) == (
        "content body frame of 4097 bytes on channel 1 at stream offset 0 exceeds frame_max 4096"
    )
    assert codec.FrameDecoder(4096).feed(deliver(codec, 1, b"x" * 4088))[0].body == b"x" * 4088


STREAM_ERRORS = [
    (
        lambda c: frame(1, 1, b"\x00\x3c\x00\x50" + b"\x00" * 9, end=0),
        "bad frame end 0x00 (expected 0xce) after a method frame on channel 1 at stream offset 0",
    ),
    (
        lambda c: frame(4, 3, b""),
        "unknown frame type 4 on channel 3 at stream offset 0",
    ),
    (
        lambda c: b"AMQP\x00\x00\x09\x01",
        "the broker refused AMQP 0-9-1 and answered with protocol header AMQP 0-0-9 "
        "at stream offset 0",
    ),
    (
        lambda c: frame(8, 1, b""),
        "heartbeat frame on channel 1 (must be 0) at stream offset 0",
    ),
    (
        lambda c: header_frame(1, 0),
        "content header frame on channel 1 without a content method at stream offset 0",
    ),
    (
        lambda c: frame(3, 1, b"x"),
        "content body frame on channel 1 without a content header at stream offset 0",
    ),
    (
        lambda c: (
            method_frame(c, 1, c.BASIC_DELIVER, ("c", 1, False, "", "q"))
            + method_frame(c, 1, c.BASIC_ACK, (1, False))
        ),
        "expected a content header frame on channel 1 after basic.deliver, got a method frame "
        "at stream offset 26",
    ),
    (
        lambda c: (
            method_frame(c, 1, c.BASIC_DELIVER, ("c", 1, False, "", "q"))
            + header_frame(1, 5)
            + method_frame(c, 1, c.BASIC_ACK, (1, False))
        ),
        "expected a content body frame on channel 1 after basic.deliver, got a method frame "
        "at stream offset 48",
    ),
    (
        lambda c: (
            method_frame(c, 1, c.BASIC_DELIVER, ("c", 1, False, "", "q"))
            + header_frame(1, 5)
            + header_frame(1, 5)
        ),
        "expected a content body frame on channel 1, got a content header frame "
        "at stream offset 48",
    ),
    (
        lambda c: (
            method_frame(c, 1, c.BASIC_DELIVER, ("c", 1, False, "", "q"))
            + header_frame(1, 5, class_id=50)
        ),
        "content header class 50 does not match basic.deliver on channel 1 at stream offset 26",
    ),
    (
        lambda c: (
            method_frame(c, 1, c.BASIC_DELIVER, ("c", 1, False, "", "q"))
            + frame(2, 1, b"\x00\x3c\x00\x00")
        ),
        "truncated content header frame on channel 1 at stream offset 26: 4 bytes, "
        "needs at least 14",
    ),
    (
        lambda c: (
            method_frame(c, 1, c.BASIC_DELIVER, ("c", 1, False, "", "q"))
            + header_frame(1, 5, b"\x80\x00\x05ab")
        ),
        "cannot decode properties: truncated shortstr at offset 3: needs 5 bytes, 2 left "
        "(content header frame on channel 1 at stream offset 26)",
    ),
    (
        lambda c: (
            method_frame(c, 1, c.BASIC_DELIVER, ("c", 1, False, "", "q"))
            + header_frame(1, 5, b"\x00\x00\x00")
        ),
        "cannot decode properties: 1 unexpected bytes after the properties at offset 2 "
        "(content header frame on channel 1 at stream offset 26)",
    ),
    (
        lambda c: (
            method_frame(c, 1, c.BASIC_DELIVER, ("c", 1, False, "", "q"))
            + header_frame(1, 3)
            + frame(3, 1, b"ab")
            + frame(3, 1, b"cd")
        ),
        "content body on channel 1 overruns its declared size 3 at stream offset 58",
    ),
    (
        lambda c: frame(1, 1, b"\x00\x3c\x00\x50\x00"),
        "cannot decode basic.ack: truncated longlong at offset 4: needs 8 bytes, 1 left "
        "(method frame on channel 1 at stream offset 0)",
    ),
    (
        lambda c: frame(1, 0, b"\x00\x0a\x00\x63"),
        "unknown method class 10 method 99 (method frame on channel 0 at stream offset 0)",
    ),
    (
        lambda c: c.HEARTBEAT_FRAME + frame(1, 0, b"\x00\x0a"),
        "truncated method frame payload: 2 bytes, needs at least 4 "
        "(method frame on channel 0 at stream offset 8)",
    ),
]


@pytest.mark.parametrize(("build", "message"), STREAM_ERRORS)
def test_decoder_errors(codec: ModuleType, build: Any, message: str) -> None:
    stream = build(codec)
    assert error(codec.FrameDecoder().feed, stream) == message
    decoder = codec.FrameDecoder()
    with pytest.raises(ProtocolError) as info:
        feed_all(decoder, stream, 1)
    assert str(info.value) == message


def test_decoder_delivery_then_error_in_one_feed(codec: ModuleType) -> None:
    decoder = codec.FrameDecoder()
    assert len(decoder.feed(deliver(codec, 1))) == 1
    offset = len(deliver(codec, 1))
    assert error(decoder.feed, frame(7, 0, b"")) == (
        f"unknown frame type 7 on channel 0 at stream offset {offset}"
    )
