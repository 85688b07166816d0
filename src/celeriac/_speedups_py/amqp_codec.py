"""Encode and decode AMQP 0-9-1: frames, methods, field tables and basic properties.

Pure twin of ``_speedups/amqp_codec.pyx``: same names, same behaviour, same exceptions and
messages. Keep the two in step; ``tests/unit/test_amqp_codec_agreement.py`` checks they agree.
The contract with the transport is ``docs/internals/amqp-codec.md``. The codec holds no I/O.

Field-table values follow RabbitMQ's errata rather than the 0-9-1 grammar: ``b`` is a signed
octet, ``s`` a signed 16-bit int (not a short string), ``l`` a signed 64-bit int; ``T`` reads
as an aware UTC datetime. A ``S`` value that is not valid UTF-8 reads as bytes, as py-amqp does.
"""

from __future__ import annotations

import calendar
import struct
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Final

from celeriac.errors import ProtocolError
from celeriac.transports.base import Delivery

__all__ = [
    "BASIC_ACK",
    "BASIC_CANCEL",
    "BASIC_CANCEL_OK",
    "BASIC_CONSUME",
    "BASIC_CONSUME_OK",
    "BASIC_DELIVER",
    "BASIC_GET",
    "BASIC_GET_EMPTY",
    "BASIC_GET_OK",
    "BASIC_NACK",
    "BASIC_PUBLISH",
    "BASIC_QOS",
    "BASIC_QOS_OK",
    "BASIC_RECOVER",
    "BASIC_RECOVER_ASYNC",
    "BASIC_RECOVER_OK",
    "BASIC_REJECT",
    "BASIC_RETURN",
    "CHANNEL_CLOSE",
    "CHANNEL_CLOSE_OK",
    "CHANNEL_FLOW",
    "CHANNEL_FLOW_OK",
    "CHANNEL_OPEN",
    "CHANNEL_OPEN_OK",
    "CONFIRM_SELECT",
    "CONFIRM_SELECT_OK",
    "CONNECTION_BLOCKED",
    "CONNECTION_CLOSE",
    "CONNECTION_CLOSE_OK",
    "CONNECTION_OPEN",
    "CONNECTION_OPEN_OK",
    "CONNECTION_SECURE",
    "CONNECTION_SECURE_OK",
    "CONNECTION_START",
    "CONNECTION_START_OK",
    "CONNECTION_TUNE",
    "CONNECTION_TUNE_OK",
    "CONNECTION_UNBLOCKED",
    "EXCHANGE_DECLARE",
    "EXCHANGE_DECLARE_OK",
    "EXCHANGE_DELETE",
    "EXCHANGE_DELETE_OK",
    "FRAME_BODY",
    "FRAME_END",
    "FRAME_HEADER",
    "FRAME_HEARTBEAT",
    "FRAME_METHOD",
    "FRAME_MIN_SIZE",
    "HEARTBEAT",
    "HEARTBEAT_FRAME",
    "MAX_TABLE_DEPTH",
    "METHOD_NAMES",
    "PROTOCOL_HEADER",
    "QUEUE_BIND",
    "QUEUE_BIND_OK",
    "QUEUE_DECLARE",
    "QUEUE_DECLARE_OK",
    "QUEUE_DELETE",
    "QUEUE_DELETE_OK",
    "QUEUE_PURGE",
    "QUEUE_PURGE_OK",
    "QUEUE_UNBIND",
    "QUEUE_UNBIND_OK",
    "Event",
    "FrameDecoder",
    "decode_method",
    "decode_properties",
    "decode_table",
    "encode_message",
    "encode_method",
    "encode_properties",
    "encode_table",
]

PROTOCOL_HEADER: Final = b"AMQP\x00\x00\x09\x01"
FRAME_METHOD: Final = 1
FRAME_HEADER: Final = 2
FRAME_BODY: Final = 3
FRAME_HEARTBEAT: Final = 8
FRAME_END: Final = 0xCE
FRAME_MIN_SIZE: Final = 4096
HEARTBEAT_FRAME: Final = b"\x08\x00\x00\x00\x00\x00\x00\xce"
MAX_TABLE_DEPTH: Final = 100
"""Field tables and arrays nested deeper than this are refused (a bound on recursion)."""

CONNECTION_START: Final = 10 << 16 | 10
CONNECTION_START_OK: Final = 10 << 16 | 11
CONNECTION_SECURE: Final = 10 << 16 | 20
CONNECTION_SECURE_OK: Final = 10 << 16 | 21
CONNECTION_TUNE: Final = 10 << 16 | 30
CONNECTION_TUNE_OK: Final = 10 << 16 | 31
CONNECTION_OPEN: Final = 10 << 16 | 40
CONNECTION_OPEN_OK: Final = 10 << 16 | 41
CONNECTION_CLOSE: Final = 10 << 16 | 50
CONNECTION_CLOSE_OK: Final = 10 << 16 | 51
CONNECTION_BLOCKED: Final = 10 << 16 | 60
CONNECTION_UNBLOCKED: Final = 10 << 16 | 61
CHANNEL_OPEN: Final = 20 << 16 | 10
CHANNEL_OPEN_OK: Final = 20 << 16 | 11
CHANNEL_FLOW: Final = 20 << 16 | 20
CHANNEL_FLOW_OK: Final = 20 << 16 | 21
CHANNEL_CLOSE: Final = 20 << 16 | 40
CHANNEL_CLOSE_OK: Final = 20 << 16 | 41
EXCHANGE_DECLARE: Final = 40 << 16 | 10
EXCHANGE_DECLARE_OK: Final = 40 << 16 | 11
EXCHANGE_DELETE: Final = 40 << 16 | 20
EXCHANGE_DELETE_OK: Final = 40 << 16 | 21
QUEUE_DECLARE: Final = 50 << 16 | 10
QUEUE_DECLARE_OK: Final = 50 << 16 | 11
QUEUE_BIND: Final = 50 << 16 | 20
QUEUE_BIND_OK: Final = 50 << 16 | 21
QUEUE_PURGE: Final = 50 << 16 | 30
QUEUE_PURGE_OK: Final = 50 << 16 | 31
QUEUE_DELETE: Final = 50 << 16 | 40
QUEUE_DELETE_OK: Final = 50 << 16 | 41
QUEUE_UNBIND: Final = 50 << 16 | 50
QUEUE_UNBIND_OK: Final = 50 << 16 | 51
BASIC_QOS: Final = 60 << 16 | 10
BASIC_QOS_OK: Final = 60 << 16 | 11
BASIC_CONSUME: Final = 60 << 16 | 20
BASIC_CONSUME_OK: Final = 60 << 16 | 21
BASIC_CANCEL: Final = 60 << 16 | 30
BASIC_CANCEL_OK: Final = 60 << 16 | 31
BASIC_PUBLISH: Final = 60 << 16 | 40
BASIC_RETURN: Final = 60 << 16 | 50
BASIC_DELIVER: Final = 60 << 16 | 60
BASIC_GET: Final = 60 << 16 | 70
BASIC_GET_OK: Final = 60 << 16 | 71
BASIC_GET_EMPTY: Final = 60 << 16 | 72
BASIC_ACK: Final = 60 << 16 | 80
BASIC_REJECT: Final = 60 << 16 | 90
BASIC_RECOVER_ASYNC: Final = 60 << 16 | 100
BASIC_RECOVER: Final = 60 << 16 | 110
BASIC_RECOVER_OK: Final = 60 << 16 | 111
BASIC_NACK: Final = 60 << 16 | 120
CONFIRM_SELECT: Final = 85 << 16 | 10
CONFIRM_SELECT_OK: Final = 85 << 16 | 11

# Argument codes, one character per spec field: o octet, h short, l long, q longlong,
# s shortstr (str), S longstr (str), x longstr (bytes), b bit, F table; the reserved fields
# (written as zero/empty, skipped when read) are r short, z shortstr, y longstr, c bit.
_METHODS: Final[dict[int, tuple[str, str, tuple[str, ...]]]] = {
    CONNECTION_START: (
        "connection.start",
        "ooFxx",
        ("version_major", "version_minor", "server_properties", "mechanisms", "locales"),
    ),
    CONNECTION_START_OK: (
        "connection.start-ok",
        "Fsxs",
        ("client_properties", "mechanism", "response", "locale"),
    ),
    CONNECTION_SECURE: ("connection.secure", "x", ("challenge",)),
    CONNECTION_SECURE_OK: ("connection.secure-ok", "x", ("response",)),
    CONNECTION_TUNE: ("connection.tune", "hlh", ("channel_max", "frame_max", "heartbeat")),
    CONNECTION_TUNE_OK: ("connection.tune-ok", "hlh", ("channel_max", "frame_max", "heartbeat")),
    CONNECTION_OPEN: ("connection.open", "szc", ("virtual_host",)),
    CONNECTION_OPEN_OK: ("connection.open-ok", "z", ()),
    CONNECTION_CLOSE: (
        "connection.close",
        "hshh",
        ("reply_code", "reply_text", "class_id", "method_id"),
    ),
    CONNECTION_CLOSE_OK: ("connection.close-ok", "", ()),
    CONNECTION_BLOCKED: ("connection.blocked", "s", ("reason",)),
    CONNECTION_UNBLOCKED: ("connection.unblocked", "", ()),
    CHANNEL_OPEN: ("channel.open", "z", ()),
    CHANNEL_OPEN_OK: ("channel.open-ok", "y", ()),
    CHANNEL_FLOW: ("channel.flow", "b", ("active",)),
    CHANNEL_FLOW_OK: ("channel.flow-ok", "b", ("active",)),
    CHANNEL_CLOSE: (
        "channel.close",
        "hshh",
        ("reply_code", "reply_text", "class_id", "method_id"),
    ),
    CHANNEL_CLOSE_OK: ("channel.close-ok", "", ()),
    EXCHANGE_DECLARE: (
        "exchange.declare",
        "rssbbbbbF",
        (
            "exchange",
            "type",
            "passive",
            "durable",
            "auto_delete",
            "internal",
            "nowait",
            "arguments",
        ),
    ),
    EXCHANGE_DECLARE_OK: ("exchange.declare-ok", "", ()),
    EXCHANGE_DELETE: ("exchange.delete", "rsbb", ("exchange", "if_unused", "nowait")),
    EXCHANGE_DELETE_OK: ("exchange.delete-ok", "", ()),
    QUEUE_DECLARE: (
        "queue.declare",
        "rsbbbbbF",
        ("queue", "passive", "durable", "exclusive", "auto_delete", "nowait", "arguments"),
    ),
    QUEUE_DECLARE_OK: (
        "queue.declare-ok",
        "sll",
        ("queue", "message_count", "consumer_count"),
    ),
    QUEUE_BIND: (
        "queue.bind",
        "rsssbF",
        ("queue", "exchange", "routing_key", "nowait", "arguments"),
    ),
    QUEUE_BIND_OK: ("queue.bind-ok", "", ()),
    QUEUE_PURGE: ("queue.purge", "rsb", ("queue", "nowait")),
    QUEUE_PURGE_OK: ("queue.purge-ok", "l", ("message_count",)),
    QUEUE_DELETE: (
        "queue.delete",
        "rsbbb",
        ("queue", "if_unused", "if_empty", "nowait"),
    ),
    QUEUE_DELETE_OK: ("queue.delete-ok", "l", ("message_count",)),
    QUEUE_UNBIND: (
        "queue.unbind",
        "rsssF",
        ("queue", "exchange", "routing_key", "arguments"),
    ),
    QUEUE_UNBIND_OK: ("queue.unbind-ok", "", ()),
    BASIC_QOS: ("basic.qos", "lhb", ("prefetch_size", "prefetch_count", "global_")),
    BASIC_QOS_OK: ("basic.qos-ok", "", ()),
    BASIC_CONSUME: (
        "basic.consume",
        "rssbbbbF",
        ("queue", "consumer_tag", "no_local", "no_ack", "exclusive", "nowait", "arguments"),
    ),
    BASIC_CONSUME_OK: ("basic.consume-ok", "s", ("consumer_tag",)),
    BASIC_CANCEL: ("basic.cancel", "sb", ("consumer_tag", "nowait")),
    BASIC_CANCEL_OK: ("basic.cancel-ok", "s", ("consumer_tag",)),
    BASIC_PUBLISH: (
        "basic.publish",
        "rssbb",
        ("exchange", "routing_key", "mandatory", "immediate"),
    ),
    BASIC_RETURN: (
        "basic.return",
        "hsss",
        ("reply_code", "reply_text", "exchange", "routing_key"),
    ),
    BASIC_DELIVER: (
        "basic.deliver",
        "sqbss",
        ("consumer_tag", "delivery_tag", "redelivered", "exchange", "routing_key"),
    ),
    BASIC_GET: ("basic.get", "rsb", ("queue", "no_ack")),
    BASIC_GET_OK: (
        "basic.get-ok",
        "qbssl",
        ("delivery_tag", "redelivered", "exchange", "routing_key", "message_count"),
    ),
    BASIC_GET_EMPTY: ("basic.get-empty", "z", ()),
    BASIC_ACK: ("basic.ack", "qb", ("delivery_tag", "multiple")),
    BASIC_REJECT: ("basic.reject", "qb", ("delivery_tag", "requeue")),
    BASIC_RECOVER_ASYNC: ("basic.recover-async", "b", ("requeue",)),
    BASIC_RECOVER: ("basic.recover", "b", ("requeue",)),
    BASIC_RECOVER_OK: ("basic.recover-ok", "", ()),
    BASIC_NACK: ("basic.nack", "qbb", ("delivery_tag", "multiple", "requeue")),
    CONFIRM_SELECT: ("confirm.select", "b", ("nowait",)),
    CONFIRM_SELECT_OK: ("confirm.select-ok", "", ()),
}

METHOD_NAMES: Final[dict[int, str]] = {method: spec[0] for method, spec in _METHODS.items()}

# Methods followed by a content header and body frames.
_CONTENT_METHODS: Final = frozenset({BASIC_DELIVER, BASIC_GET_OK, BASIC_RETURN, BASIC_PUBLISH})

# Basic properties in flag order (bit 15 first); "headers" is the application_headers table.
_PROPERTIES: Final = (
    ("content_type", "s", 0x8000),
    ("content_encoding", "s", 0x4000),
    ("headers", "F", 0x2000),
    ("delivery_mode", "o", 0x1000),
    ("priority", "o", 0x0800),
    ("correlation_id", "s", 0x0400),
    ("reply_to", "s", 0x0200),
    ("expiration", "s", 0x0100),
    ("message_id", "s", 0x0080),
    ("timestamp", "q", 0x0040),
    ("type", "s", 0x0020),
    ("user_id", "s", 0x0010),
    ("app_id", "s", 0x0008),
    ("cluster_id", "s", 0x0004),
)
_UNKNOWN_FLAGS: Final = 0x0003

_FRAME_KINDS: Final = {1: "method", 2: "content header", 3: "content body", 8: "heartbeat"}
_INT_LIMITS: Final = {"o": 0xFF, "h": 0xFFFF, "l": 0xFFFFFFFF, "q": 0xFFFFFFFFFFFFFFFF}
_INT_WIDTHS: Final = {"o": 1, "h": 2, "l": 4, "q": 8}
_INT_NAMES: Final = {"o": "octet", "h": "short", "l": "long", "q": "longlong"}

_U16: Final = struct.Struct(">H")
_U32: Final = struct.Struct(">I")
_U64: Final = struct.Struct(">Q")
_I8: Final = struct.Struct(">b")
_I16: Final = struct.Struct(">h")
_I32: Final = struct.Struct(">i")
_I64: Final = struct.Struct(">q")
_F32: Final = struct.Struct(">f")
_F64: Final = struct.Struct(">d")
_FRAME_HEAD: Final = struct.Struct(">BHI")
_CONTENT_HEAD: Final = struct.Struct(">HHQ")
_METHOD_ID: Final = struct.Struct(">HH")

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=timezone.utc)
# py-amqp writes ints in +-2147483647 as I (not -2**31: it tests the magnitude); the same
# bound keeps our tables byte-identical to a Celery client's.
_I_MAX: Final = 2147483647
_L_MIN: Final = -(2**63)
_L_MAX: Final = 2**63 - 1


class _Heartbeat:
    """The type of :data:`HEARTBEAT`, the event for a heartbeat frame."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "HEARTBEAT"


HEARTBEAT: Final = _Heartbeat()

Event = (
    Delivery
    | tuple[int, int, tuple[Any, ...]]
    | tuple[int, int, tuple[Any, ...], Delivery]
    | _Heartbeat
)
"""What :meth:`FrameDecoder.feed` returns, one per complete method or message, in wire order."""


# -- errors ----------------------------------------------------------------------------------


def _truncated(what: str, off: int, need: int, end: int) -> ProtocolError:
    return ProtocolError(f"truncated {what} at offset {off}: needs {need} bytes, {end - off} left")


def _vrepr(value: Any) -> str:
    """A bounded repr of a bad value for an error message; never raises."""
    try:
        text = repr(value)
    except Exception:
        text = f"<unrepresentable {type(value).__name__}>"
    if len(text) > 60:
        text = text[:59] + "…"
    return text


# -- field tables: decoding -------------------------------------------------------------------


def _text_or_bytes(raw: bytes) -> str | bytes:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw


def _read_table(buf: bytes, off: int, end: int, depth: int) -> tuple[dict[Any, Any], int]:
    if depth > MAX_TABLE_DEPTH:
        raise ProtocolError(
            f"field tables nested deeper than {MAX_TABLE_DEPTH} levels at offset {off}"
        )
    if off + 4 > end:
        raise _truncated("field table", off, 4, end)
    (size,) = _U32.unpack_from(buf, off)
    off += 4
    limit = off + size
    if limit > end:
        raise ProtocolError(
            f"field table at offset {off - 4} declares {size} bytes, only {end - off} left"
        )
    table: dict[Any, Any] = {}
    while off < limit:
        klen = buf[off]
        off += 1
        if off + klen > limit:
            raise _truncated("field name", off, klen, limit)
        key = _text_or_bytes(buf[off : off + klen])
        off += klen
        table[key], off = _read_value(buf, off, limit, depth)
    return table, off


def _read_array(buf: bytes, off: int, end: int, depth: int) -> tuple[list[Any], int]:
    if depth > MAX_TABLE_DEPTH:
        raise ProtocolError(
            f"field tables nested deeper than {MAX_TABLE_DEPTH} levels at offset {off}"
        )
    if off + 4 > end:
        raise _truncated("field array", off, 4, end)
    (size,) = _U32.unpack_from(buf, off)
    off += 4
    limit = off + size
    if limit > end:
        raise ProtocolError(
            f"field array at offset {off - 4} declares {size} bytes, only {end - off} left"
        )
    items: list[Any] = []
    append = items.append
    while off < limit:
        value, off = _read_value(buf, off, limit, depth)
        append(value)
    return items, off


def _read_value(buf: bytes, off: int, end: int, depth: int) -> tuple[Any, int]:
    if off >= end:
        raise _truncated("field value", off, 1, end)
    tag = buf[off]
    off += 1
    if tag == 0x53:  # S
        if off + 4 > end:
            raise _truncated("longstr", off, 4, end)
        (size,) = _U32.unpack_from(buf, off)
        off += 4
        if off + size > end:
            raise _truncated("longstr", off, size, end)
        return _text_or_bytes(buf[off : off + size]), off + size
    if tag == 0x49:  # I
        if off + 4 > end:
            raise _truncated("long", off, 4, end)
        return _I32.unpack_from(buf, off)[0], off + 4
    if tag == 0x74:  # t
        if off + 1 > end:
            raise _truncated("boolean", off, 1, end)
        return buf[off] != 0, off + 1
    if tag == 0x56:  # V
        return None, off
    if tag == 0x46:  # F
        return _read_table(buf, off, end, depth + 1)
    if tag == 0x41:  # A
        return _read_array(buf, off, end, depth + 1)
    if tag == 0x64:  # d
        if off + 8 > end:
            raise _truncated("double", off, 8, end)
        return _F64.unpack_from(buf, off)[0], off + 8
    if tag == 0x6C or tag == 0x4C:  # l, L: signed 64-bit (RabbitMQ errata; py-amqp writes L)
        if off + 8 > end:
            raise _truncated("longlong", off, 8, end)
        return _I64.unpack_from(buf, off)[0], off + 8
    if tag == 0x62:  # b: signed (errata)
        if off + 1 > end:
            raise _truncated("octet", off, 1, end)
        return _I8.unpack_from(buf, off)[0], off + 1
    if tag == 0x42:  # B
        if off + 1 > end:
            raise _truncated("octet", off, 1, end)
        return buf[off], off + 1
    if tag == 0x73 or tag == 0x55:  # s (errata), U: signed 16-bit
        if off + 2 > end:
            raise _truncated("short", off, 2, end)
        return _I16.unpack_from(buf, off)[0], off + 2
    if tag == 0x75:  # u
        if off + 2 > end:
            raise _truncated("short", off, 2, end)
        return _U16.unpack_from(buf, off)[0], off + 2
    if tag == 0x69:  # i
        if off + 4 > end:
            raise _truncated("long", off, 4, end)
        return _U32.unpack_from(buf, off)[0], off + 4
    if tag == 0x66:  # f
        if off + 4 > end:
            raise _truncated("float", off, 4, end)
        return _F32.unpack_from(buf, off)[0], off + 4
    if tag == 0x44:  # D: scale octet, signed 32-bit unscaled value
        if off + 5 > end:
            raise _truncated("decimal", off, 5, end)
        scale = buf[off]
        (unscaled,) = _I32.unpack_from(buf, off + 1)
        return Decimal(f"{unscaled}E-{scale}"), off + 5
    if tag == 0x54:  # T
        if off + 8 > end:
            raise _truncated("timestamp", off, 8, end)
        (seconds,) = _U64.unpack_from(buf, off)
        try:
            return _EPOCH + timedelta(seconds=seconds), off + 8
        except OverflowError:
            raise ProtocolError(f"timestamp {seconds} out of range at offset {off}") from None
    if tag == 0x78:  # x
        if off + 4 > end:
            raise _truncated("byte array", off, 4, end)
        (size,) = _U32.unpack_from(buf, off)
        off += 4
        if off + size > end:
            raise _truncated("byte array", off, size, end)
        return buf[off : off + size], off + size
    raise ProtocolError(f"unknown field value type 0x{tag:02x} at offset {off - 1}")


def decode_table(data: bytes | bytearray | memoryview) -> dict[Any, Any]:
    """Decode one field table, its u32 length prefix included; nothing may follow it.

    Raises:
        ProtocolError: truncated or malformed data, an unknown value type, or trailing bytes.
    """
    buf = data if type(data) is bytes else bytes(data)
    try:
        table, off = _read_table(buf, 0, len(buf), 1)
    except ProtocolError as exc:
        raise ProtocolError(f"cannot decode field table: {exc}") from None
    if off != len(buf):
        raise ProtocolError(
            f"cannot decode field table: {len(buf) - off} unexpected bytes after it at offset {off}"
        )
    return table


# -- field tables: encoding -------------------------------------------------------------------


def _decimal_parts(value: Decimal, key: Any) -> tuple[int, int]:
    sign, digits, exponent = value.as_tuple()
    if not isinstance(exponent, int):
        raise ProtocolError(f"cannot encode Decimal {value} for key {_vrepr(key)}: not finite")
    unscaled = 0
    for digit in digits:
        unscaled = unscaled * 10 + digit
    if exponent > 0:
        unscaled *= 10**exponent
        exponent = 0
    if sign:
        unscaled = -unscaled
    if -exponent > 255 or not -(2**31) <= unscaled < 2**31:
        raise ProtocolError(
            f"cannot encode Decimal {value} for key {_vrepr(key)}: needs a scale of 0..255 "
            f"and a signed 32-bit unscaled value"
        )
    return -exponent, unscaled


def _timestamp(value: datetime, key: Any) -> int:
    seconds = calendar.timegm(value.utctimetuple())
    if seconds < 0:
        raise ProtocolError(
            f"cannot encode datetime {value} for key {_vrepr(key)}: before 1970 (AMQP "
            f"timestamps are unsigned)"
        )
    return seconds


def _describe(kind: int, a: Any, b: Any) -> str:
    """What an encoding error is about; built only when there is an error."""
    if kind == 0:
        return f"the value for key {_vrepr(a)}"
    if kind == 1:
        return f"{a} argument {b}"
    if kind == 2:
        return f"property {a}"
    return str(a)


def _encode_text(value: str, kind: int, a: Any, b: Any = None) -> bytes:
    try:
        return value.encode()
    except UnicodeEncodeError:
        raise ProtocolError(
            f"cannot encode {_describe(kind, a, b)}: not encodable as utf-8"
        ) from None


def _write_table(out: bytearray, table: Mapping[Any, Any], depth: int) -> None:
    if depth > MAX_TABLE_DEPTH:
        raise ProtocolError(f"cannot encode field tables nested deeper than {MAX_TABLE_DEPTH}")
    start = len(out)
    out += b"\x00\x00\x00\x00"
    for key, value in table.items():
        if type(key) is str or isinstance(key, str):
            try:
                raw = key.encode()
            except UnicodeEncodeError:
                raise ProtocolError(
                    f"cannot encode field name {_vrepr(key)}: not encodable as utf-8"
                ) from None
        elif isinstance(key, bytes):
            raw = key
        else:
            raise ProtocolError(
                f"cannot encode field name {_vrepr(key)}: {type(key).__name__}, not str"
            )
        if len(raw) > 255:
            raise ProtocolError(
                f"cannot encode field name {_vrepr(key)}: {len(raw)} bytes, over the "
                f"shortstr limit of 255"
            )
        out.append(len(raw))
        out += raw
        _write_value(out, value, key, depth)
    _U32.pack_into(out, start, len(out) - start - 4)


def _write_array(out: bytearray, items: list[Any] | tuple[Any, ...], key: Any, depth: int) -> None:
    if depth > MAX_TABLE_DEPTH:
        raise ProtocolError(f"cannot encode field tables nested deeper than {MAX_TABLE_DEPTH}")
    start = len(out)
    out += b"\x00\x00\x00\x00"
    for value in items:
        _write_value(out, value, key, depth)
    _U32.pack_into(out, start, len(out) - start - 4)


def _write_int(out: bytearray, value: int, key: Any) -> None:
    if -_I_MAX <= value <= _I_MAX:
        out.append(0x49)
        out += _I32.pack(value)
    elif _L_MIN <= value <= _L_MAX:
        out.append(0x4C)
        out += _I64.pack(value)
    else:
        raise ProtocolError(
            f"cannot encode int {_vrepr(value)} for key {_vrepr(key)}: outside the signed "
            f"64-bit range"
        )


def _write_value(out: bytearray, value: Any, key: Any, depth: int) -> None:
    kind = type(value)
    if kind is str:
        raw = _encode_text(value, 0, key)
        out.append(0x53)
        out += _U32.pack(len(raw))
        out += raw
    elif kind is bool:
        out.append(0x74)
        out.append(1 if value else 0)
    elif kind is int:
        _write_int(out, value, key)
    elif value is None:
        out.append(0x56)
    elif kind is dict:
        out.append(0x46)
        _write_table(out, value, depth + 1)
    elif kind is list or kind is tuple:
        out.append(0x41)
        _write_array(out, value, key, depth + 1)
    elif kind is float:
        out.append(0x64)
        out += _F64.pack(value)
    elif kind is bytes:
        out.append(0x53)
        out += _U32.pack(len(value))
        out += value
    else:
        _write_other(out, value, key, depth)


def _write_other(out: bytearray, value: Any, key: Any, depth: int) -> None:
    """Subclasses of the plain types, Decimal, datetime and other mappings."""
    if isinstance(value, str):
        raw = _encode_text(value, 0, key)
        out.append(0x53)
        out += _U32.pack(len(raw))
        out += raw
    elif isinstance(value, bytes):
        out.append(0x53)
        out += _U32.pack(len(value))
        out += value
    elif isinstance(value, int):
        _write_int(out, int(value), key)
    elif isinstance(value, float):
        out.append(0x64)
        out += _F64.pack(value)
    elif isinstance(value, Decimal):
        scale, unscaled = _decimal_parts(value, key)
        out.append(0x44)
        out.append(scale)
        out += _I32.pack(unscaled)
    elif isinstance(value, datetime):
        seconds = _timestamp(value, key)
        out.append(0x54)
        out += _U64.pack(seconds)
    elif isinstance(value, Mapping):
        out.append(0x46)
        _write_table(out, value, depth + 1)
    elif isinstance(value, (list, tuple)):
        out.append(0x41)
        _write_array(out, value, key, depth + 1)
    else:
        raise ProtocolError(
            f"cannot encode a value of type {type(value).__name__} for key {_vrepr(key)}: "
            f"field tables take str, bytes, bool, int, float, Decimal, datetime, dict, "
            f"list, tuple or None"
        )


def encode_table(table: Mapping[Any, Any] | None) -> bytes:
    """Encode a field table with its u32 length prefix (``None`` is the empty table).

    Raises:
        ProtocolError: a key or value that AMQP cannot carry; the message names the key.
    """
    out = bytearray()
    _write_table(out, {} if table is None else table, 1)
    return bytes(out)


# -- method arguments -------------------------------------------------------------------------


def _read_shortstr(buf: bytes, off: int, end: int) -> tuple[str, int]:
    if off >= end:
        raise _truncated("shortstr", off, 1, end)
    size = buf[off]
    off += 1
    if off + size > end:
        raise _truncated("shortstr", off, size, end)
    try:
        return buf[off : off + size].decode(), off + size
    except UnicodeDecodeError:
        raise ProtocolError(f"invalid utf-8 in shortstr at offset {off}") from None


def _read_args(buf: bytes, off: int, end: int, fmt: str) -> tuple[tuple[Any, ...], int]:
    values: list[Any] = []
    bits = 0
    bit = 8
    for code in fmt:
        if code == "b" or code == "c":
            if bit == 8:
                if off >= end:
                    raise _truncated("bit", off, 1, end)
                bits = buf[off]
                off += 1
                bit = 0
            if code == "b":
                values.append(bits >> bit & 1 == 1)
            bit += 1
            continue
        bit = 8
        if code == "s" or code == "z":
            text, off = _read_shortstr(buf, off, end)
            if code == "s":
                values.append(text)
        elif code == "q":
            if off + 8 > end:
                raise _truncated("longlong", off, 8, end)
            values.append(_U64.unpack_from(buf, off)[0])
            off += 8
        elif code == "h" or code == "r":
            if off + 2 > end:
                raise _truncated("short", off, 2, end)
            if code == "h":
                values.append(_U16.unpack_from(buf, off)[0])
            off += 2
        elif code == "l":
            if off + 4 > end:
                raise _truncated("long", off, 4, end)
            values.append(_U32.unpack_from(buf, off)[0])
            off += 4
        elif code == "o":
            if off >= end:
                raise _truncated("octet", off, 1, end)
            values.append(buf[off])
            off += 1
        elif code == "F":
            table, off = _read_table(buf, off, end, 1)
            values.append(table)
        else:  # x, S, y: longstr
            if off + 4 > end:
                raise _truncated("longstr", off, 4, end)
            (size,) = _U32.unpack_from(buf, off)
            off += 4
            if off + size > end:
                raise _truncated("longstr", off, size, end)
            if code == "x":
                values.append(buf[off : off + size])
            elif code == "S":
                try:
                    values.append(buf[off : off + size].decode())
                except UnicodeDecodeError:
                    raise ProtocolError(f"invalid utf-8 in longstr at offset {off}") from None
            off += size
    return tuple(values), off


def decode_method(payload: bytes | bytearray | memoryview) -> tuple[int, tuple[Any, ...]]:
    """Decode a method frame's payload into ``(method, args)``.

    Raises:
        ProtocolError: an unknown method, truncated arguments or bytes after them.
    """
    buf = payload if type(payload) is bytes else bytes(payload)
    end = len(buf)
    if end < 4:
        raise ProtocolError(f"truncated method frame payload: {end} bytes, needs at least 4")
    class_id, method_id = _METHOD_ID.unpack_from(buf, 0)
    method = class_id << 16 | method_id
    spec = _METHODS.get(method)
    if spec is None:
        raise ProtocolError(f"unknown method class {class_id} method {method_id}")
    try:
        args, off = _read_args(buf, 4, end, spec[1])
    except ProtocolError as exc:
        raise ProtocolError(f"cannot decode {spec[0]}: {exc}") from None
    if off != end:
        raise ProtocolError(
            f"cannot decode {spec[0]}: {end - off} unexpected bytes after the arguments "
            f"at offset {off}"
        )
    return method, args


def _shortstr_bytes(value: Any, kind: int, a: Any, b: Any = None) -> bytes:
    if type(value) is str or isinstance(value, str):
        raw = _encode_text(value, kind, a, b)
    elif isinstance(value, bytes):
        raw = value
    else:
        raise ProtocolError(
            f"cannot encode {_describe(kind, a, b)}: {type(value).__name__}, not str"
        )
    if len(raw) > 255:
        raise ProtocolError(
            f"cannot encode {_describe(kind, a, b)}: {len(raw)} bytes, over the shortstr "
            f"limit of 255"
        )
    return raw


def _longstr_bytes(value: Any, kind: int, a: Any, b: Any = None) -> bytes:
    if type(value) is str or isinstance(value, str):
        raw = _encode_text(value, kind, a, b)
    elif isinstance(value, bytes):
        raw = value
    else:
        raise ProtocolError(
            f"cannot encode {_describe(kind, a, b)}: {type(value).__name__}, not str or bytes"
        )
    if len(raw) > 0xFFFFFFFF:
        raise ProtocolError(
            f"cannot encode {_describe(kind, a, b)}: {len(raw)} bytes, over the longstr limit"
        )
    return raw


def _write_uint(out: bytearray, value: Any, code: str, kind: int, a: Any, b: Any = None) -> None:
    limit = _INT_LIMITS[code]
    if not isinstance(value, int) or not 0 <= value <= limit:
        raise ProtocolError(
            f"cannot encode {_describe(kind, a, b)}: {_vrepr(value)} is not an int in "
            f"0..{limit} ({_INT_NAMES[code]})"
        )
    out += int(value).to_bytes(_INT_WIDTHS[code], "big")


def _write_args(
    out: bytearray, name: str, fmt: str, fields: tuple[str, ...], args: tuple[Any, ...]
) -> None:
    if type(args) is not tuple:
        if not isinstance(args, (tuple, list)):
            raise ProtocolError(
                f"cannot encode {name}: arguments must be a tuple, not {type(args).__name__}"
            )
        args = tuple(args)
    if len(args) != len(fields):
        raise ProtocolError(
            f"cannot encode {name}: takes {len(fields)} arguments "
            f"({', '.join(fields)}), got {len(args)}"
        )
    index = 0
    bits = 0
    bit = 0
    for code in fmt:
        if code == "b" or code == "c":
            if code == "b":
                if args[index]:
                    bits |= 1 << bit
                index += 1
            bit += 1
            if bit == 8:
                out.append(bits)
                bits = bit = 0
            continue
        if bit:
            out.append(bits)
            bits = bit = 0
        if code == "r":
            out += b"\x00\x00"
        elif code == "z":
            out.append(0)
        elif code == "y":
            out += b"\x00\x00\x00\x00"
        else:
            value = args[index]
            field = fields[index]
            index += 1
            if code == "s":
                raw = _shortstr_bytes(value, 1, name, field)
                out.append(len(raw))
                out += raw
            elif code == "F":
                if value is not None and not isinstance(value, Mapping):
                    raise ProtocolError(
                        f"cannot encode {name} argument {field}: {type(value).__name__}, "
                        f"not a mapping"
                    )
                try:
                    _write_table(out, {} if value is None else value, 1)
                except ProtocolError as exc:
                    raise ProtocolError(f"cannot encode {name} argument {field}: {exc}") from None
            elif code == "x" or code == "S":
                raw = _longstr_bytes(value, 1, name, field)
                out += _U32.pack(len(raw))
                out += raw
            else:
                _write_uint(out, value, code, 1, name, field)
    if bit:
        out.append(bits)


def _frame_start(out: bytearray, frame_type: int, channel: int) -> int:
    if not isinstance(channel, int) or not 0 <= channel <= 0xFFFF:
        raise ProtocolError(f"cannot encode a frame on channel {_vrepr(channel)}: not 0..65535")
    start = len(out)
    out.append(frame_type)
    out += _U16.pack(channel)
    out += b"\x00\x00\x00\x00"
    return start


def _frame_end(out: bytearray, start: int) -> None:
    _U32.pack_into(out, start + 3, len(out) - start - 7)
    out.append(FRAME_END)


def encode_method(channel: int, method: int, args: tuple[Any, ...]) -> bytes:
    """One complete method frame: ``args`` in spec order, reserved fields left out.

    Raises:
        ProtocolError: an unknown method, the wrong number of arguments, or an argument of the
            wrong type or out of range (the message names it).
    """
    spec = _METHODS.get(method) if type(method) is int else None
    if spec is None:
        raise ProtocolError(f"cannot encode unknown method {_vrepr(method)}")
    out = bytearray()
    start = _frame_start(out, FRAME_METHOD, channel)
    out += _METHOD_ID.pack(method >> 16, method & 0xFFFF)
    _write_args(out, spec[0], spec[1], spec[2], args)
    _frame_end(out, start)
    return bytes(out)


# -- basic properties -------------------------------------------------------------------------


def _write_properties(
    out: bytearray, properties: Mapping[str, Any], headers: Mapping[Any, Any] | None
) -> None:
    if not isinstance(properties, Mapping):
        raise ProtocolError(f"cannot encode properties: {type(properties).__name__}, not a mapping")
    start = len(out)
    out += b"\x00\x00"
    flags = 0
    get = properties.get
    for name, code, flag in _PROPERTIES:
        if code == "F":
            if headers is None:
                continue
            if not isinstance(headers, Mapping):
                raise ProtocolError(
                    f"cannot encode headers: {type(headers).__name__}, not a mapping"
                )
            try:
                _write_table(out, headers, 1)
            except ProtocolError as exc:
                raise ProtocolError(f"cannot encode headers: {exc}") from None
        else:
            value = get(name)
            if value is None:
                continue
            if code == "s":
                raw = _shortstr_bytes(value, 2, name)
                out.append(len(raw))
                out += raw
            else:
                _write_uint(out, value, code, 2, name)
        flags |= flag
    _U16.pack_into(out, start, flags)


def encode_properties(
    properties: Mapping[str, Any], headers: Mapping[Any, Any] | None = None
) -> bytes:
    """Property flags and list of a basic content header; unset and ``None`` ones are left out.

    Keys of ``properties`` that are not basic properties are ignored.

    Raises:
        ProtocolError: a property of the wrong type or too long, or a bad header value.
    """
    out = bytearray()
    _write_properties(out, properties, headers)
    return bytes(out)


def _read_properties(
    buf: bytes, off: int, end: int
) -> tuple[dict[str, Any], dict[Any, Any] | None, int]:
    if off + 2 > end:
        raise _truncated("property flags", off, 2, end)
    (flags,) = _U16.unpack_from(buf, off)
    off += 2
    if flags & _UNKNOWN_FLAGS:
        raise ProtocolError(f"unknown property flags 0x{flags & _UNKNOWN_FLAGS:04x}")
    properties: dict[str, Any] = {}
    headers: dict[Any, Any] | None = None
    for name, code, flag in _PROPERTIES:
        if not flags & flag:
            continue
        if code == "s":
            properties[name], off = _read_shortstr(buf, off, end)
        elif code == "F":
            headers, off = _read_table(buf, off, end, 1)
        elif code == "o":
            if off >= end:
                raise _truncated("octet", off, 1, end)
            properties[name] = buf[off]
            off += 1
        else:
            if off + 8 > end:
                raise _truncated("longlong", off, 8, end)
            properties[name] = _U64.unpack_from(buf, off)[0]
            off += 8
    return properties, headers, off


def decode_properties(
    data: bytes | bytearray | memoryview,
) -> tuple[dict[str, Any], dict[Any, Any] | None]:
    """Decode property flags and list into ``(properties, headers)`` (``None``: no headers).

    Raises:
        ProtocolError: truncated or malformed data, unknown flags, or trailing bytes.
    """
    buf = data if type(data) is bytes else bytes(data)
    try:
        properties, headers, off = _read_properties(buf, 0, len(buf))
    except ProtocolError as exc:
        raise ProtocolError(f"cannot decode properties: {exc}") from None
    if off != len(buf):
        raise ProtocolError(
            f"cannot decode properties: {len(buf) - off} unexpected bytes after them "
            f"at offset {off}"
        )
    return properties, headers


def _check_frame_max(frame_max: Any) -> int:
    if type(frame_max) is not int or not FRAME_MIN_SIZE <= frame_max <= 0xFFFFFFFF:
        raise ValueError(
            f"frame_max must be an int in {FRAME_MIN_SIZE}..{0xFFFFFFFF}, not {_vrepr(frame_max)}"
        )
    return frame_max


def encode_message(
    channel: int,
    exchange: str,
    routing_key: str,
    mandatory: bool,
    body: bytes,
    properties: Mapping[str, Any],
    headers: Mapping[Any, Any] | None,
    frame_max: int,
) -> bytes:
    """``basic.publish``, its content header and the body in frames of ``frame_max - 8`` bytes.

    One buffer for one ``sendall``. An empty body has no body frame.

    Raises:
        ProtocolError: a bad argument, property or header, or a content header frame larger
            than ``frame_max``.
        ValueError: ``frame_max`` is not in 4096..2**32-1.
    """
    _check_frame_max(frame_max)
    if type(body) is not bytes:
        if not isinstance(body, (bytes, bytearray, memoryview)):
            raise ProtocolError(
                f"cannot encode basic.publish: body is {type(body).__name__}, not bytes"
            )
        body = bytes(body)
    out = bytearray()
    start = _frame_start(out, FRAME_METHOD, channel)
    out += b"\x00\x3c\x00\x28\x00\x00"  # basic.publish, reserved ticket
    raw = _shortstr_bytes(exchange, 1, "basic.publish", "exchange")
    out.append(len(raw))
    out += raw
    raw = _shortstr_bytes(routing_key, 1, "basic.publish", "routing_key")
    out.append(len(raw))
    out += raw
    out.append(1 if mandatory else 0)
    _frame_end(out, start)
    start = _frame_start(out, FRAME_HEADER, channel)
    out += _CONTENT_HEAD.pack(60, 0, len(body))
    _write_properties(out, properties, headers)
    _frame_end(out, start)
    if len(out) - start > frame_max:
        raise ProtocolError(
            f"cannot encode basic.publish: the content header frame is {len(out) - start} "
            f"bytes, over frame_max {frame_max}"
        )
    chunk = frame_max - 8
    size = len(body)
    for offset in range(0, size, chunk):
        piece = body[offset : offset + chunk] if size > chunk else body
        out.append(FRAME_BODY)
        out += _U16.pack(channel)
        out += _U32.pack(len(piece))
        out += piece
        out.append(FRAME_END)
    return bytes(out)


# -- the frame decoder ------------------------------------------------------------------------


class _Content:
    """A content method waiting for its header and body frames on one channel."""

    __slots__ = ("args", "body_size", "chunks", "headers", "method", "properties", "received")

    def __init__(self, method: int, args: tuple[Any, ...]) -> None:
        self.method = method
        self.args = args
        self.properties: dict[str, Any] | None = None
        self.headers: dict[Any, Any] | None = None
        self.body_size = 0
        self.received = 0
        self.chunks: list[memoryview] = []


def _delivery(channel: int, content: _Content, body: bytes) -> Event:
    method = content.method
    args = content.args
    properties = content.properties
    assert properties is not None
    if method == BASIC_DELIVER:
        return Delivery(
            body,
            content.headers,
            properties,
            {
                "exchange": args[3],
                "routing_key": args[4],
                "redelivered": args[2],
                "consumer_tag": args[0],
                "channel": channel,
            },
            args[1],
        )
    if method == BASIC_GET_OK:
        info = {
            "exchange": args[2],
            "routing_key": args[3],
            "redelivered": args[1],
            "consumer_tag": None,
            "channel": channel,
            "message_count": args[4],
        }
        tag = args[0]
    elif method == BASIC_RETURN:
        info = {
            "exchange": args[2],
            "routing_key": args[3],
            "redelivered": False,
            "consumer_tag": None,
            "channel": channel,
            "reply_code": args[0],
            "reply_text": args[1],
        }
        tag = 0
    else:  # basic.publish, seen when decoding what a client sends
        info = {
            "exchange": args[0],
            "routing_key": args[1],
            "redelivered": False,
            "consumer_tag": None,
            "channel": channel,
        }
        tag = 0
    return (channel, method, args, Delivery(body, content.headers, properties, info, tag))


class FrameDecoder:
    """Turns the bytes read from an AMQP connection into events, in wire order.

    :meth:`feed` takes whatever the socket returned: frames may be split anywhere, many may
    come at once, and a message's body may span many frames. After a :class:`ProtocolError`
    the stream is unusable: close the connection.

    Args:
        frame_max: the largest frame accepted, header and end byte included; writable after
            ``connection.tune``.
    """

    __slots__ = (
        "_chunks",
        "_content",
        "_frame_max",
        "_frame_off",
        "_got",
        "_head",
        "_need",
        "_offset",
    )

    def __init__(self, frame_max: int = 131072) -> None:
        self._frame_max = _check_frame_max(frame_max)
        self._content: dict[int, _Content] = {}
        self._offset = 0  # stream offset of the next byte fed
        # a frame split across feeds: its header bytes so far, then its payload and end byte
        self._head = b""
        self._chunks: list[memoryview] = []
        self._got = 0
        self._need = 0
        self._frame_off = 0

    @property
    def frame_max(self) -> int:
        """The largest frame accepted (4096..2**32-1), header and end byte included."""
        return self._frame_max

    @frame_max.setter
    def frame_max(self, value: int) -> None:
        self._frame_max = _check_frame_max(value)

    def feed(self, data: bytes) -> list[Event]:
        """Buffer ``data`` and return the events of every frame it completes.

        Raises:
            ProtocolError: a malformed stream; the message names the frame and its offset.
        """
        if type(data) is not bytes:
            data = bytes(data)
        events: list[Event] = []
        size = len(data)
        pos = 0
        if self._head:
            pos = self._resume(data, events)
            if pos < 0:
                self._offset += size
                return events
        frame_max = self._frame_max
        while size - pos >= 7:
            frame_type, channel, length = _FRAME_HEAD.unpack_from(data, pos)
            if (
                frame_type not in _FRAME_KINDS
                or length + 8 > frame_max
                or (frame_type == 8 and channel != 0)
            ):
                self._bad_header(frame_type, channel, length, self._offset + pos)
            end = pos + 7 + length
            if end >= size:
                break
            if data[end] != FRAME_END:
                self._bad_end(data[end], frame_type, channel, self._offset + pos)
            self._frame(frame_type, channel, data, pos + 7, end, events, self._offset + pos)
            pos = end + 1
        if pos < size:
            self._frame_off = self._offset + pos
            if size - pos >= 7:
                self._head = data[pos : pos + 7]
                self._need = _U32.unpack_from(data, pos + 3)[0] + 1
                self._chunks = [memoryview(data)[pos + 7 :]]
                self._got = size - pos - 7
            else:
                self._head = data[pos:]
        self._offset += size
        return events

    def _resume(self, data: bytes, events: list[Event]) -> int:
        """Complete the frame split across feeds; the position after it, or -1 if short."""
        pos = 0
        size = len(data)
        head = self._head
        if len(head) < 7:
            pos = min(7 - len(head), size)
            head = self._head = head + data[:pos]
            if len(head) < 7:
                return -1
            frame_type, channel, length = _FRAME_HEAD.unpack_from(head, 0)
            if (
                frame_type not in _FRAME_KINDS
                or length + 8 > self._frame_max
                or (frame_type == 8 and channel != 0)
            ):
                self._bad_header(frame_type, channel, length, self._frame_off)
            self._need = length + 1
            self._got = 0
            self._chunks = []
        take = min(self._need - self._got, size - pos)
        if take:
            self._chunks.append(memoryview(data)[pos : pos + take])
            self._got += take
            pos += take
        if self._got < self._need:
            return -1
        frame_type, channel, length = _FRAME_HEAD.unpack_from(head, 0)
        chunks = self._chunks
        last = chunks[-1]
        end_byte = last[-1]
        chunks[-1] = last[:-1]
        payload = b"".join(chunks)
        self._head = b""
        self._chunks = []
        if end_byte != FRAME_END:
            self._bad_end(end_byte, frame_type, channel, self._frame_off)
        self._frame(frame_type, channel, payload, 0, length, events, self._frame_off)
        return pos

    def _bad_header(self, frame_type: int, channel: int, length: int, off: int) -> None:
        if frame_type not in _FRAME_KINDS:
            if frame_type == 0x41 and channel == 0x4D51 and length >> 24 == 0x50:
                raise ProtocolError(
                    f"the broker refused AMQP 0-9-1 and answered with protocol header "
                    f"AMQP {length >> 16 & 0xFF}-{length >> 8 & 0xFF}-{length & 0xFF} "
                    f"at stream offset {off}"
                )
            raise ProtocolError(
                f"unknown frame type {frame_type} on channel {channel} at stream offset {off}"
            )
        if frame_type == FRAME_HEARTBEAT and channel != 0:
            raise ProtocolError(
                f"heartbeat frame on channel {channel} (must be 0) at stream offset {off}"
            )
        raise ProtocolError(
            f"{_FRAME_KINDS[frame_type]} frame of {length + 8} bytes on channel {channel} "
            f"at stream offset {off} exceeds frame_max {self._frame_max}"
        )

    def _bad_end(self, end_byte: int, frame_type: int, channel: int, off: int) -> None:
        raise ProtocolError(
            f"bad frame end 0x{end_byte:02x} (expected 0xce) after a "
            f"{_FRAME_KINDS[frame_type]} frame on channel {channel} at stream offset {off}"
        )

    def _frame(
        self,
        frame_type: int,
        channel: int,
        buf: bytes,
        start: int,
        end: int,
        events: list[Event],
        off: int,
    ) -> None:
        if frame_type == FRAME_BODY:
            content = self._content.get(channel)
            if content is None or content.properties is None:
                raise ProtocolError(
                    f"content body frame on channel {channel} without a content header "
                    f"at stream offset {off}"
                )
            received = content.received + end - start
            if received > content.body_size:
                raise ProtocolError(
                    f"content body on channel {channel} overruns its declared size "
                    f"{content.body_size} at stream offset {off}"
                )
            if received == content.body_size and not content.chunks:
                body = buf if start == 0 and end == len(buf) else buf[start:end]
            else:
                content.chunks.append(memoryview(buf)[start:end])
                content.received = received
                if received < content.body_size:
                    return
                body = b"".join(content.chunks)
            del self._content[channel]
            events.append(_delivery(channel, content, body))
        elif frame_type == FRAME_METHOD:
            pending = self._content.get(channel)
            if pending is not None:
                expected = "body" if pending.properties is not None else "header"
                raise ProtocolError(
                    f"expected a content {expected} frame on channel {channel} after "
                    f"{METHOD_NAMES[pending.method]}, got a method frame at stream offset {off}"
                )
            try:
                method, args = decode_method(buf[start:end])
            except ProtocolError as exc:
                raise ProtocolError(
                    f"{exc} (method frame on channel {channel} at stream offset {off})"
                ) from None
            if method in _CONTENT_METHODS:
                self._content[channel] = _Content(method, args)
            else:
                events.append((channel, method, args))
        elif frame_type == FRAME_HEADER:
            content = self._content.get(channel)
            if content is None:
                raise ProtocolError(
                    f"content header frame on channel {channel} without a content method "
                    f"at stream offset {off}"
                )
            if content.properties is not None:
                raise ProtocolError(
                    f"expected a content body frame on channel {channel}, got a content "
                    f"header frame at stream offset {off}"
                )
            if end - start < 14:
                raise ProtocolError(
                    f"truncated content header frame on channel {channel} at stream offset "
                    f"{off}: {end - start} bytes, needs at least 14"
                )
            class_id, _weight, body_size = _CONTENT_HEAD.unpack_from(buf, start)
            if class_id != content.method >> 16:
                raise ProtocolError(
                    f"content header class {class_id} does not match "
                    f"{METHOD_NAMES[content.method]} on channel {channel} at stream offset {off}"
                )
            try:
                properties, headers, pos = _read_properties(
                    buf[start + 12 : end], 0, end - start - 12
                )
                if pos != end - start - 12:
                    raise ProtocolError(
                        f"{end - start - 12 - pos} unexpected bytes after the properties "
                        f"at offset {pos}"
                    )
            except ProtocolError as exc:
                raise ProtocolError(
                    f"cannot decode properties: {exc} (content header frame on channel "
                    f"{channel} at stream offset {off})"
                ) from None
            content.properties = properties
            content.headers = headers
            content.body_size = body_size
            if body_size == 0:
                del self._content[channel]
                events.append(_delivery(channel, content, b""))
        else:
            events.append(HEARTBEAT)
