"""Property test: the compiled AMQP codec and its pure twin agree, errors included."""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from celeriac.transports.base import Delivery
from tests.conftest import load_impl

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def both() -> tuple[ModuleType, ModuleType]:
    return load_impl("compiled", "amqp_codec"), load_impl("pure", "amqp_codec")


def normal(value: Any) -> Any:
    """A comparable form: NaN equal to NaN, deliveries as tuples, types kept apart."""
    if isinstance(value, float):
        return ("nan",) if math.isnan(value) else (float, value)
    if isinstance(value, Delivery):
        return (
            "delivery",
            normal(value.body),
            normal(value.headers),
            normal(value.properties),
            normal(value.delivery_info),
            value.delivery_tag,
        )
    if isinstance(value, dict):
        return ("dict", tuple((normal(k), normal(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(normal(v) for v in value))
    if isinstance(value, (bool, int, str, bytes, Decimal, datetime)) or value is None:
        return (type(value).__name__, str(value) if isinstance(value, Decimal) else value)
    return ("other", repr(value))


def outcome(func: Callable[..., Any], *args: Any) -> tuple[str, Any]:
    try:
        return "ok", normal(func(*args))
    except Exception as exc:  # the exception type and message must agree too
        return type(exc).__name__, str(exc)


def agree(both: tuple[ModuleType, ModuleType], name: str, *args: Any) -> tuple[str, Any]:
    compiled, pure = both
    got = outcome(getattr(compiled, name), *args)
    want = outcome(getattr(pure, name), *args)
    assert got == want
    return got


# -- strategies ------------------------------------------------------------------------------

texts = st.text(max_size=12)
keys = st.one_of(texts, st.binary(max_size=6), st.text(min_size=250, max_size=260))
decimals = st.decimals(allow_nan=True, allow_infinity=False, places=None).filter(
    lambda d: d.is_nan() or abs(d.as_tuple().exponent) < 300  # type: ignore[operator]
)
datetimes = st.datetimes(
    min_value=datetime(1960, 1, 1), max_value=datetime(2200, 1, 1)
) | st.datetimes(timezones=st.just(timezone(timedelta(hours=-3))))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(),
    texts,
    st.binary(max_size=8),
    decimals,
    datetimes,
    st.sampled_from([{1}, object, 1j, "\udc80"]),  # refused, with the key in the message
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=3).map(tuple),
        st.dictionaries(keys, children, max_size=4),
    ),
    max_leaves=12,
)
tables = st.dictionaries(keys, values, max_size=6)
good_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=40),
    st.binary(max_size=8),
    st.decimals(
        allow_nan=False, allow_infinity=False, places=3, max_value=10**5, min_value=-(10**5)
    ),
    st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1)),
)
good_tables = st.dictionaries(
    st.text(max_size=20),
    st.recursive(
        good_scalars,
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(st.text(max_size=8), children, max_size=3)
        ),
        max_leaves=8,
    ),
    max_size=8,
)

PROPERTY_NAMES = (
    "content_type",
    "content_encoding",
    "delivery_mode",
    "priority",
    "correlation_id",
    "reply_to",
    "expiration",
    "message_id",
    "timestamp",
    "type",
    "user_id",
    "app_id",
    "cluster_id",
    "unknown",
)
property_values = st.one_of(
    st.none(),
    st.integers(min_value=-1, max_value=2**64),
    st.text(max_size=10),
    st.text(min_size=254, max_size=258),
    st.binary(max_size=4),
    st.sampled_from([1.5, [], "\ud800"]),
)
properties = st.dictionaries(st.sampled_from(PROPERTY_NAMES), property_values, max_size=8)


def mutations(data: bytes) -> st.SearchStrategy[bytes]:
    """``data`` itself, truncated, with a byte changed, or with bytes added."""
    if not data:
        return st.just(data) | st.binary(max_size=8)
    positions = st.integers(min_value=0, max_value=len(data) - 1)
    return st.one_of(
        st.just(data),
        positions.map(lambda i: data[:i]),
        st.tuples(positions, st.integers(0, 255)).map(
            lambda t: data[: t[0]] + bytes([t[1]]) + data[t[0] + 1 :]
        ),
        st.tuples(positions, st.binary(min_size=1, max_size=4)).map(
            lambda t: data[: t[0]] + t[1] + data[t[0] :]
        ),
    )


# -- tables, properties and methods ----------------------------------------------------------


@SETTINGS
@given(table=tables)
def test_tables_agree(both: tuple[ModuleType, ModuleType], table: dict[Any, Any]) -> None:
    status, _ = agree(both, "encode_table", table)
    if status == "ok":
        agree(both, "decode_table", both[1].encode_table(table))


@SETTINGS
@given(data=st.data(), table=good_tables)
def test_table_bytes_agree(
    both: tuple[ModuleType, ModuleType], data: st.DataObject, table: dict[str, Any]
) -> None:
    encoded = both[1].encode_table(table)
    assert both[0].encode_table(table) == encoded
    assert agree(both, "decode_table", encoded)[0] == "ok"
    agree(both, "decode_table", data.draw(mutations(encoded)))


@SETTINGS
@given(data=st.binary(max_size=64))
def test_random_bytes_agree(both: tuple[ModuleType, ModuleType], data: bytes) -> None:
    agree(both, "decode_table", data)
    agree(both, "decode_table", struct.pack(">I", len(data)) + data)
    agree(both, "decode_properties", data)
    agree(both, "decode_method", data)
    agree(both, "decode_method", b"\x00\x3c\x00\x3c" + data)


@SETTINGS
@given(data=st.data(), props=properties, headers=st.none() | tables)
def test_properties_agree(
    both: tuple[ModuleType, ModuleType],
    data: st.DataObject,
    props: dict[str, Any],
    headers: dict[Any, Any] | None,
) -> None:
    status, _ = agree(both, "encode_properties", props, headers)
    if status == "ok":
        encoded = both[1].encode_properties(props, headers)
        agree(both, "decode_properties", data.draw(mutations(encoded)))


ARG_VALUES = st.one_of(
    st.integers(min_value=-1, max_value=2**64),
    st.booleans(),
    st.text(max_size=8),
    st.text(min_size=255, max_size=257),
    st.binary(max_size=6),
    st.none(),
    good_tables,
    st.sampled_from([1.5, [1], "\udc80"]),
)


@SETTINGS
@given(data=st.data())
def test_methods_agree(both: tuple[ModuleType, ModuleType], data: st.DataObject) -> None:
    pure = both[1]
    method = data.draw(st.sampled_from(sorted(pure.METHOD_NAMES)) | st.integers(0, 2**32))
    arity = len(pure._METHODS[method][2]) if method in pure._METHODS else 2
    size = data.draw(st.sampled_from([arity, arity, arity, arity + 1, max(arity - 1, 0)]))
    args = tuple(data.draw(st.lists(ARG_VALUES, min_size=size, max_size=size)))
    channel = data.draw(st.sampled_from([0, 1, 65535, 65536, -1]))
    status, _ = agree(both, "encode_method", channel, method, args)
    if status == "ok":
        payload = pure.encode_method(channel, method, args)[7:-1]
        agree(both, "decode_method", data.draw(mutations(payload)))


@SETTINGS
@given(
    exchange=st.text(max_size=8) | st.just("x" * 256),
    routing_key=st.text(max_size=8),
    mandatory=st.booleans(),
    body=st.binary(max_size=9000),
    props=properties,
    headers=st.none() | good_tables,
    frame_max=st.sampled_from([4096, 4097, 131072, 4095, 0]),
)
def test_encode_message_agrees(
    both: tuple[ModuleType, ModuleType],
    exchange: str,
    routing_key: str,
    mandatory: bool,
    body: bytes,
    props: dict[str, Any],
    headers: dict[str, Any] | None,
    frame_max: int,
) -> None:
    agree(
        both,
        "encode_message",
        1,
        exchange,
        routing_key,
        mandatory,
        body,
        props,
        headers,
        frame_max,
    )


# -- the frame decoder -----------------------------------------------------------------------


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    """A valid stream of deliveries, get-oks, returns, other methods and heartbeats."""
    c = load_impl("pure", "amqp_codec")
    parts = []
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["deliver", "get", "return", "method", "heartbeat"]))
        channel = draw(st.sampled_from([1, 2, 300]))
        if kind == "heartbeat":
            parts.append(c.HEARTBEAT_FRAME)
            continue
        if kind == "method":
            parts.append(c.encode_method(channel, c.BASIC_CANCEL, (draw(texts), True)))
            continue
        if kind == "deliver":
            method, args = (
                c.BASIC_DELIVER,
                (draw(texts), draw(st.integers(0, 2**64 - 1)), True, "", "q"),
            )
        elif kind == "get":
            method, args = c.BASIC_GET_OK, (1, False, "ex", draw(texts), 5)
        else:
            method, args = c.BASIC_RETURN, (312, "NO_ROUTE", "ex", "rk")
        body = draw(st.binary(max_size=9000))
        message = c.encode_message(
            channel,
            "",
            "",
            False,
            body,
            draw(properties.filter(_encodable)),
            draw(st.none() | good_tables),
            4096,
        )
        skip = 8 + struct.unpack_from(">I", message, 3)[0]
        parts.append(c.encode_method(channel, method, args) + message[skip:])
    return b"".join(parts)


def _encodable(props: dict[str, Any]) -> bool:
    """Properties that encode and read back (bytes that are not UTF-8 do not)."""
    codec = load_impl("pure", "amqp_codec")
    try:
        codec.decode_properties(codec.encode_properties(props, None))
    except Exception:
        return False
    return True


def decode_stream(codec: ModuleType, data: bytes, cuts: list[int]) -> tuple[str, Any]:
    decoder = codec.FrameDecoder(4096)
    events: list[Any] = []
    start = 0
    try:
        for cut in [*sorted(cuts), len(data)]:
            events += decoder.feed(data[start:cut])
            start = max(start, cut)
    except Exception as exc:
        return type(exc).__name__, str(exc)
    return "ok", normal(events)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), stream=streams())
def test_streams_agree(
    both: tuple[ModuleType, ModuleType], data: st.DataObject, stream: bytes
) -> None:
    compiled, pure = both
    mutated = data.draw(mutations(stream))
    cuts = data.draw(st.lists(st.integers(0, max(len(mutated), 1)), max_size=6))
    got = decode_stream(compiled, mutated, cuts)
    assert got == decode_stream(pure, mutated, cuts)
    if mutated == stream:
        assert got[0] == "ok"
        assert got == decode_stream(pure, stream, [])  # splitting never changes the result


@SETTINGS
@given(data=st.binary(max_size=200), cuts=st.lists(st.integers(0, 200), max_size=5))
def test_random_streams_agree(
    both: tuple[ModuleType, ModuleType], data: bytes, cuts: list[int]
) -> None:
    compiled, pure = both
    assert decode_stream(compiled, data, cuts) == decode_stream(pure, data, cuts)
