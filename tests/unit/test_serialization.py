"""Tests for celeriac.serialization and celeriac.compression: round trips, refusal, errors."""

from __future__ import annotations

import bz2
import contextlib
import dataclasses
import enum
import json
import lzma
import math
import os
import pickle
import subprocess
import sys
import zlib
from collections import namedtuple
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from celeriac import compression, jsoncodec, serialization
from celeriac.errors import ConfigurationError, ContentDisallowed, DecodeError, EncodeError
from celeriac.serialization import (
    accept_content,
    compress,
    decompress,
    dumps,
    json_dumps,
    json_loads,
    loads,
    register,
    serializer_for_content_type,
    unregister,
)

JSON = "application/json"
PICKLE = "application/x-python-serialize"
MSGPACK = "application/x-msgpack"
YAML = "application/x-yaml"
TASK_BODY = [[2, 3], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
IST = timezone(timedelta(hours=5, minutes=30))

# Values that have broken serializers before. tests/compat checks them against kombu too.
TRICKY: dict[str, Any] = {
    "ascii": "hello",
    "unicode": "h\u00e9llo w\u00f6rld \u2603",
    "astral": "\U0001f600 \U00010348 \U0001d11e",
    "empty_str": "",
    "nested": {"a": [1, [2, [3, {"b": None}]]], "c": {"d": {"e": []}}},
    "task_body": TASK_BODY,
    "int": 42,
    "int_neg": -7,
    "int_u64_max": 2**64 - 1,
    "int_i64_min": -(2**63),
    "int_2_64": 2**64,
    "int_below_i64": -(2**63) - 1,
    "int_huge": 2**200,
    "float": 3.14159,
    "float_tiny": 5e-324,
    "float_max": 1.7976931348623157e308,
    "float_neg_zero": -0.0,
    "float_1e16": 1e16,
    "nan": math.nan,
    "inf": math.inf,
    "neg_inf": -math.inf,
    "none": None,
    "true": True,
    "false": False,
    "datetime_naive": datetime(2024, 1, 2, 3, 4, 5, 678901),
    "datetime_utc": datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
    "datetime_offset": datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=IST),
    "date": date(2024, 1, 2),
    "time": time(3, 4, 5, 6),
    "time_aware": time(3, 4, 5, tzinfo=timezone.utc),
    "decimal": Decimal("1.10"),
    "decimal_long": Decimal("-12345678901234567890.000000001"),
    "uuid": UUID("3f2a1b4c-5d6e-4f70-8a9b-0c1d2e3f4a5b"),
    "bytes_utf8": "h\u00e9llo".encode(),
    "bytes_binary": bytes(range(256)),
    "bytes_empty": b"",
    "str_1mb": "x" * 1_000_000,
    "unicode_1mb": "\u00e9\u2603\U0001f600" * 100_000,
    "mixed": [None, math.nan, UUID(int=1), Decimal("0.5"), datetime(2020, 2, 29), b"\xff"],
}
# What msgpack and yaml can carry (kombu's codecs fail on the rest; tests/compat checks that).
MSGPACK_VALUES = [
    name
    for name in TRICKY
    if name.split("_")[0] not in {"datetime", "date", "time", "decimal", "uuid", "mixed"}
    and name not in {"int_2_64", "int_below_i64", "int_huge"}
]
YAML_VALUES = [
    name for name in TRICKY if name.split("_")[0] not in {"time", "decimal", "uuid", "mixed"}
]


def assert_same(got: Any, want: Any, ordered: bool = True) -> None:
    """Equal and of the same types all the way down (1.10 is not 1.1, -0.0 is not 0.0).

    ``ordered=False`` ignores dict key order (yaml sorts keys).
    """
    assert type(got) is type(want), (type(got), type(want))
    if isinstance(want, dict):
        assert list(got) == list(want) if ordered else sorted(got) == sorted(want)
        for key in want:
            assert_same(got[key], want[key], ordered)
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want)
        for got_item, want_item in zip(got, want, strict=True):
            assert_same(got_item, want_item, ordered)
    elif isinstance(want, float) and math.isnan(want):
        assert math.isnan(got)
    elif isinstance(want, (datetime, time)):
        assert got == want
        assert got.utcoffset() == want.utcoffset()
    elif isinstance(want, (str, bytes)):
        assert got == want
    else:
        assert repr(got) == repr(want)


def as_json(value: Any) -> Any:
    """What JSON gives back for ``value``: arrays for tuples."""
    if isinstance(value, (list, tuple)):
        return [as_json(item) for item in value]
    if isinstance(value, dict):
        return {key: as_json(item) for key, item in value.items()}
    return value


# -- json ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(TRICKY))
def test_json_round_trips_tricky_values(name: str) -> None:
    value = TRICKY[name]
    content_type, content_encoding, payload = dumps(value)
    assert (content_type, content_encoding) == (JSON, "utf-8")
    assert type(payload) is bytes
    assert_same(loads(payload, content_type, content_encoding), value)
    assert_same(loads(payload.decode("utf-8"), content_type, content_encoding), value)


def test_json_typical_task_body_is_compact_and_exact() -> None:
    payload = json_dumps(TASK_BODY)
    assert payload == (b'[[2,3],{},{"callbacks":null,"errbacks":null,"chain":null,"chord":null}]')
    assert json_loads(payload) == TASK_BODY


def test_json_typical_body_takes_the_orjson_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(_: Any) -> Any:
        raise AssertionError("slow path used for a plain body")

    monkeypatch.setattr(jsoncodec, "_revive", forbidden)
    monkeypatch.setattr(jsoncodec, "_stdlib_loads", forbidden)
    monkeypatch.setattr(jsoncodec, "_stdlib_dumps", forbidden)
    assert json_loads(json_dumps(TASK_BODY)) == TASK_BODY
    assert json_loads(b'{"id": "3f2a", "n": -5, "x": 1.5}') == {"id": "3f2a", "n": -5, "x": 1.5}


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (2**64 - 1, b"18446744073709551615"),
        (2**64, b"18446744073709551616"),
        (-(2**63) - 1, b"-9223372036854775809"),
        (2**200, str(2**200).encode()),
        ([1, {"k": -(2**100)}], b'[1,{"k":' + str(-(2**100)).encode() + b"}]"),
    ],
)
def test_json_big_ints_are_exact_both_ways(value: Any, text: bytes) -> None:
    assert json_dumps(value) == text
    assert_same(json_loads(text), value)


def test_json_long_digit_runs_that_are_not_ints_decode_unchanged() -> None:
    body = b'["12345678901234567890123", 0.1234567890123456789, 1.5e300]'
    assert_same(json_loads(body), ["12345678901234567890123", 0.1234567890123456789, 1.5e300])


def test_json_nan_and_infinity_use_kombus_tokens() -> None:
    assert json_dumps([math.nan, math.inf, -math.inf, None]) == b"[NaN,Infinity,-Infinity,null]"
    got = json_loads(b"[NaN, Infinity, -Infinity, null]")
    assert math.isnan(got[0])
    assert got[1:] == [math.inf, -math.inf, None]


def test_json_non_string_keys_become_strings_like_the_json_module() -> None:
    value = {1: "a", None: "b", 2.5: "c", False: "d", "s": "e"}
    assert json_dumps(value) == b'{"1":"a","null":"b","2.5":"c","false":"d","s":"e"}'
    assert json_loads(json_dumps(value)) == {
        "1": "a",
        "null": "b",
        "2.5": "c",
        "false": "d",
        "s": "e",
    }


def test_json_unencodable_keys_and_values_raise_encode_error() -> None:
    with pytest.raises(EncodeError, match=r"cannot encode dict as json: keys must be"):
        dumps({(1, 2): "tuple key"})
    with pytest.raises(EncodeError, match=r"cannot encode list as json: .*object"):
        dumps([object()])
    circular: list[Any] = []
    circular.append(circular)
    with pytest.raises(EncodeError, match="list as json: Circular reference detected"):
        json_dumps(circular)


def test_json_deep_nesting_beyond_orjsons_limit_still_encodes() -> None:
    deep: Any = 0
    for _ in range(300):
        deep = [deep]
    assert json_loads(json_dumps(deep)) == deep


@pytest.mark.parametrize(
    ("value", "envelope"),
    [
        (
            datetime(2024, 1, 2, 3, 4, 5),
            {"__type__": "datetime", "__value__": "2024-01-02T03:04:05"},
        ),
        (
            datetime(2024, 1, 2, 3, 4, 5, tzinfo=IST),
            {"__type__": "datetime", "__value__": "2024-01-02T03:04:05+05:30"},
        ),
        (date(2024, 1, 2), {"__type__": "date", "__value__": "2024-01-02"}),
        (time(3, 4, 5), {"__type__": "time", "__value__": "03:04:05"}),
        (Decimal("1.10"), {"__type__": "decimal", "__value__": "1.10"}),
        (
            UUID(int=255),
            {"__type__": "uuid", "__value__": {"hex": "000000000000000000000000000000ff"}},
        ),
        (b"abc", {"__type__": "bytes", "__value__": "abc"}),
        (b"\xff\x00", {"__type__": "base64", "__value__": "/wA="}),
    ],
)
def test_json_envelopes(value: Any, envelope: dict[str, Any]) -> None:
    assert json.loads(json_dumps(value)) == envelope
    assert json.loads(json_dumps([None, {"k": value}])) == [None, {"k": envelope}]
    assert_same(json_loads(json.dumps(envelope)), value)


def test_json_uuid_next_to_null_is_enveloped_not_stringified() -> None:
    # orjson alone writes a UUID as a plain string; kombu writes the envelope.
    value = {"id": UUID(int=7), "parent": None}
    assert json.loads(json_dumps(value))["id"] == {
        "__type__": "uuid",
        "__value__": {"hex": "00000000000000000000000000000007"},
    }


class _Point:
    def __init__(self, x: int, y: float) -> None:
        self.x, self.y = x, y

    def __json__(self) -> Any:
        return {"x": self.x, "y": self.y, "id": UUID(int=1)}


def test_json_uses_dunder_json_and_envelopes_its_result() -> None:
    got = json_loads(json_dumps([_Point(1, math.inf)]))
    assert got[0]["x"] == 1
    assert got[0]["y"] == math.inf
    assert got[0]["id"] == UUID(int=1)


def test_json_tuples_namedtuples_and_enums_become_plain_values() -> None:
    pair = namedtuple("pair", "a b")

    class Color(enum.Enum):
        RED = "red"

    class Level(enum.IntEnum):
        HIGH = 3

    value = [(1, 2), pair(3, 4), Color.RED, Level.HIGH, None]
    assert json_loads(json_dumps(value)) == [[1, 2], [3, 4], "red", 3, None]
    assert json_loads(json_dumps(value[:4])) == [[1, 2], [3, 4], "red", 3]


def test_json_dataclass_without_dunder_json_is_refused() -> None:
    @dataclasses.dataclass
    class Plain:
        a: int

    with pytest.raises(EncodeError, match="Plain is not JSON serializable"):
        json_dumps({"v": Plain(1)})


def test_json_lone_surrogates_round_trip() -> None:
    value = ["\ud800", "a\udfffb"]
    assert json_dumps(value) == b'["\\ud800","a\\udfffb"]'
    assert json_loads(json_dumps(value)) == value


def test_json_only_exact_envelopes_are_decoded() -> None:
    body = (
        b'[{"__type__": "datetime", "__value__": "x", "extra": 1},'
        b' {"__type__": "date"}, "__type__"]'
    )
    assert json_loads(body) == [
        {"__type__": "datetime", "__value__": "x", "extra": 1},
        {"__type__": "date"},
        "__type__",
    ]


def test_json_envelopes_decode_innermost_first() -> None:
    body = b'{"__type__": "uuid", "__value__": {"hex": "000000000000000000000000000000ff"}}'
    assert json_loads(body) == UUID(int=255)
    nested = b'[{"a": {"__type__": "date", "__value__": "2024-01-02"}}]'
    assert json_loads(nested) == [{"a": date(2024, 1, 2)}]


def test_json_older_plain_string_forms_stay_strings() -> None:
    body = b'["2024-01-02T03:04:05+00:00", "3f2a1b4c-5d6e-4f70-8a9b-0c1d2e3f4a5b", "1.10"]'
    assert json_loads(body) == [
        "2024-01-02T03:04:05+00:00",
        "3f2a1b4c-5d6e-4f70-8a9b-0c1d2e3f4a5b",
        "1.10",
    ]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"__type__": "frob", "__value__": 1}', r"unknown __type__ 'frob'"),
        (b'{"__type__": ["x"], "__value__": 1}', r"unknown __type__ \['x'\]"),
        (b'{"__type__": "datetime", "__value__": "yesterday"}', r"bad datetime value 'yesterday'"),
        (b'{"__type__": "uuid", "__value__": "abc"}', r"bad uuid value 'abc'"),
        (b'{"__type__": "decimal", "__value__": "one"}', r"bad decimal value 'one'"),
        (b'{"x": 1, "__type__": 2', r"at byte 22"),
    ],
)
def test_json_bad_envelopes_raise_decode_error(body: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        loads(body, JSON, "utf-8")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"a": tru}', r"cannot decode application/json body: expecting value at byte 6"),
        (b"", r"expecting value at byte 0"),
        (b"[1, 2", r"at byte 5"),
        (b'"\xc3\xa9\xc3\xa9" x', r"extra data at byte 7"),
        (b'["ok", "\xff"]', r"cannot decode application/json body: invalid utf-8 at byte 8"),
        ('{"a": tru}', r"at char 6"),
        ("\ufeff[]", r"bom"),
    ],
)
def test_json_invalid_bodies_raise_decode_error(body: bytes | str, message: str) -> None:
    with pytest.raises(DecodeError, match=message) as info:
        loads(body, JSON, "utf-8")
    assert info.value.__cause__ is not None


def test_json_loads_accepts_buffers() -> None:
    payload = json_dumps(TASK_BODY)
    assert loads(memoryview(payload), JSON, "utf-8") == TASK_BODY  # type: ignore[arg-type]
    assert loads(bytearray(payload), JSON, "utf-8") == TASK_BODY  # type: ignore[arg-type]
    assert json_loads(memoryview(b"[2]")) == [2]  # type: ignore[arg-type]


# -- pickle, msgpack, yaml -------------------------------------------------------------------


@pytest.mark.parametrize("name", list(TRICKY))
def test_pickle_round_trips_tricky_values(name: str) -> None:
    value = (TRICKY[name], (1, 2))
    content_type, content_encoding, payload = dumps(value, "pickle")
    assert (content_type, content_encoding) == (PICKLE, "binary")
    assert payload[:2] == b"\x80\x04"  # protocol 4, kombu's default
    assert_same(loads(payload, content_type, content_encoding), value)


def test_pickle_protocol_comes_from_the_environment() -> None:
    script = "from celeriac.serialization import dumps; print(dumps(1, 'pickle')[2][:2].hex())"
    env = dict(os.environ, PICKLE_PROTOCOL="2")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "8002", out.stderr
    env["PICKLE_PROTOCOL"] = "four"
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert out.returncode != 0
    assert "ConfigurationError: cannot read PICKLE_PROTOCOL: 'four' is not an integer" in out.stderr


UNPICKLED: list[str] = []


def _record_unpickling(tag: str) -> str:
    UNPICKLED.append(tag)
    return tag


class _Tripwire:
    """Unpickling this appends to UNPICKLED: proof that pickle.loads ran."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return _record_unpickling, ("tripped",)


@pytest.fixture
def tripwire() -> Iterator[bytes]:
    UNPICKLED.clear()
    yield pickle.dumps(_Tripwire())
    UNPICKLED.clear()


@pytest.mark.parametrize("accepted", [["json"], ["json", "msgpack", "yaml"], []])
def test_pickle_is_never_unpickled_unless_accepted(tripwire: bytes, accepted: list[str]) -> None:
    with pytest.raises(
        ContentDisallowed,
        match=r"refusing to deserialize untrusted content of type "
        r"pickle \(application/x-python-serialize\)",
    ):
        loads(tripwire, PICKLE, "binary", accept=accept_content(accepted))
    assert UNPICKLED == []
    # The same payload does run when pickle is accepted: the tripwire works.
    assert loads(tripwire, PICKLE, "binary", accept=accept_content(["pickle"])) == "tripped"
    assert UNPICKLED == ["tripped"]


def test_accept_none_accepts_every_registered_serializer(tripwire: bytes) -> None:
    assert loads(tripwire, PICKLE, "binary") == "tripped"


def test_pickle_corrupt_payload_raises_decode_error() -> None:
    with pytest.raises(DecodeError, match="cannot decode application/x-python-serialize body"):
        loads(b"\x80\x04not a pickle", PICKLE, "binary")


@pytest.mark.parametrize("name", MSGPACK_VALUES)
def test_msgpack_round_trips(name: str) -> None:
    value = TRICKY[name]
    content_type, content_encoding, payload = dumps(value, "msgpack")
    assert (content_type, content_encoding) == (MSGPACK, "binary")
    assert_same(loads(payload, content_type, content_encoding), as_json(value))


@pytest.mark.parametrize("value", [datetime(2024, 1, 1), 2**64, Decimal(1), {1, 2}])
def test_msgpack_unsupported_values_raise_encode_error(value: Any) -> None:
    with pytest.raises(EncodeError, match=f"cannot encode {type(value).__name__} with msgpack"):
        dumps(value, "msgpack")


def test_msgpack_corrupt_payload_raises_decode_error() -> None:
    with pytest.raises(DecodeError, match="cannot decode application/x-msgpack body"):
        loads(b"\xc1", MSGPACK, "binary")
    with pytest.raises(DecodeError, match="cannot decode application/x-msgpack body"):
        loads(b"\x92\x01", MSGPACK, "binary")  # array of 2 with one item


@pytest.mark.parametrize("name", YAML_VALUES)
def test_yaml_round_trips(name: str) -> None:
    value = TRICKY[name]
    content_type, content_encoding, payload = dumps(value, "yaml")
    assert (content_type, content_encoding) == (YAML, "utf-8")
    assert type(payload) is bytes
    assert_same(loads(payload, content_type, content_encoding), value, ordered=False)


def test_yaml_is_safe_load_only() -> None:
    with pytest.raises(DecodeError, match="cannot decode application/x-yaml body"):
        loads(b"!!python/object/apply:os.getpid []", YAML, "utf-8")
    with pytest.raises(EncodeError, match="cannot encode _Point with yaml"):
        dumps(_Point(1, 2.0), "yaml")


@pytest.mark.parametrize(
    ("serializer", "module", "extra"),
    [("msgpack", "msgpack", "msgpack"), ("yaml", "yaml", "yaml")],
)
def test_missing_optional_serializer_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, serializer: str, module: str, extra: str
) -> None:
    loader = getattr(serialization, f"_{module}")
    loader.cache_clear()
    monkeypatch.setitem(sys.modules, module, None)
    try:
        message = rf"cannot use the {serializer} serializer: {module} is not installed "
        message += rf"\(pip install celeriac\[{extra}\]\)"
        with pytest.raises(ConfigurationError, match=message):
            dumps([1], serializer)
        content_type = accept_content([serializer])
        with pytest.raises(ConfigurationError, match=message):
            loads(b"[1]", next(iter(content_type)), "binary")
    finally:
        loader.cache_clear()


# -- loads: content types, raw content, accept -----------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "content_encoding", "want"),
    [
        (None, "binary", b"\xff\x00"),
        ("", "binary", b"\xff\x00"),
        ("application/data", "binary", b"\xff\x00"),
        ("application/data", "ascii-8bit", b"\xff\x00"),
        ("application/text", "latin-1", "\xff\x00"),
        ("application/data", "ISO-8859-1", "\xff\x00"),
    ],
)
def test_raw_content_is_returned_undecoded(
    content_type: str | None, content_encoding: str, want: bytes | str
) -> None:
    assert loads(b"\xff\x00", content_type, content_encoding, accept=frozenset()) == want


def test_raw_content_with_text_encoding_becomes_str() -> None:
    data = "caf\u00e9 \U0001f600".encode()
    assert loads(data, "application/data", "utf-8") == "caf\u00e9 \U0001f600"
    assert loads(data, None, None) == "caf\u00e9 \U0001f600"  # kombu: missing encoding is utf-8
    assert loads("already text", None, "binary") == "already text"
    with pytest.raises(DecodeError, match=r"cannot decode application/data body: invalid utf-8"):
        loads(b"\xff", None, "utf-8")
    with pytest.raises(DecodeError, match=r"unknown text encoding 'zlib'"):
        loads(b"x", "application/data", "zlib")


def test_unknown_content_type() -> None:
    with pytest.raises(DecodeError, match="cannot decode application/x-frob body"):
        loads(b"x", "application/x-frob", "binary")
    with pytest.raises(ContentDisallowed, match="untrusted content of type application/x-frob"):
        loads(b"x", "application/x-frob", "binary", accept=accept_content(["json"]))
    with pytest.raises(DecodeError, match="no serializer for this type"):
        loads(b"x", "application/x-frob", "binary", accept=frozenset({"application/x-frob"}))


@pytest.mark.parametrize("serializer", ["msgpack", "yaml", "pickle"])
def test_json_only_accept_refuses_other_serializers(serializer: str) -> None:
    content_type, content_encoding, payload = dumps([1, "a"], serializer)
    with pytest.raises(ContentDisallowed, match=rf"{serializer} \({content_type}\)"):
        loads(payload, content_type, content_encoding, accept=accept_content(["json"]))
    accepted = accept_content(["json", serializer])
    assert loads(payload, content_type, content_encoding, accept=accepted) == [1, "a"]


def test_accept_content_maps_names_and_passes_mime_types() -> None:
    assert accept_content(["json", "pickle", "msgpack", "yaml"]) == {JSON, PICKLE, MSGPACK, YAML}
    assert accept_content(["application/json", "yaml", "text/x-custom"]) == {
        JSON,
        YAML,
        "text/x-custom",
    }
    assert accept_content("json") == {JSON}
    assert accept_content([]) == frozenset()
    with pytest.raises(
        ConfigurationError, match=r"cannot accept content 'jsn': no such serializer"
    ):
        accept_content(["json", "jsn"])


def test_dumps_unknown_serializer_raises_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match=r"cannot encode with serializer 'jsno'"):
        dumps(1, "jsno")


def test_serializer_for_content_type() -> None:
    assert serializer_for_content_type(JSON) == "json"
    assert serializer_for_content_type(PICKLE) == "pickle"
    assert serializer_for_content_type(MSGPACK) == "msgpack"
    assert serializer_for_content_type(YAML) == "yaml"
    with pytest.raises(ConfigurationError, match="application/x-frob"):
        serializer_for_content_type("application/x-frob")


@pytest.fixture
def rot13() -> Iterator[str]:
    import codecs

    register(
        "rot13",
        lambda obj: codecs.encode(str(obj), "rot13"),
        lambda data: codecs.decode(bytes(data).decode("ascii"), "rot13"),
        "text/x-rot13",
        "us-ascii",
    )
    yield "rot13"
    with contextlib.suppress(ConfigurationError):
        unregister("rot13")


def test_register_and_unregister_a_serializer(rot13: str) -> None:
    assert dumps("hello", rot13) == ("text/x-rot13", "us-ascii", b"uryyb")
    assert accept_content([rot13]) == {"text/x-rot13"}
    assert serializer_for_content_type("text/x-rot13") == "rot13"
    assert loads(b"uryyb", "text/x-rot13", "us-ascii", accept=accept_content([rot13])) == "hello"
    with pytest.raises(EncodeError, match="cannot encode rot13 output as us-ascii"):
        dumps("h\u00e9", rot13)
    unregister(rot13)
    with pytest.raises(ConfigurationError, match="'rot13'"):
        dumps("hello", rot13)
    with pytest.raises(DecodeError, match="text/x-rot13"):
        loads(b"uryyb", "text/x-rot13", "us-ascii")
    with pytest.raises(ConfigurationError, match="cannot unregister serializer 'rot13'"):
        unregister(rot13)


def test_register_refuses_raw_content_types() -> None:
    with pytest.raises(ConfigurationError, match="application/data is raw content"):
        register("raw", bytes, bytes, "application/data", "binary")


# -- compression -----------------------------------------------------------------------------

METHODS = {
    "zlib": "application/x-gzip",
    "gzip": "application/x-gzip",
    "bzip2": "application/x-bz2",
    "lzma": "application/x-lzma",
    "xz": "application/x-lzma",
    "zstd": "application/zstd",
    "brotli": "application/x-brotli",
}
PAYLOADS = {
    "empty": b"",
    "text": json_dumps(TASK_BODY) * 50,
    "random_1mb": os.urandom(1 << 20),
}


@pytest.mark.parametrize("payload", list(PAYLOADS))
@pytest.mark.parametrize("method", list(METHODS))
def test_compression_round_trips(method: str, payload: str) -> None:
    data = PAYLOADS[payload]
    packed, content_type = compress(data, method)
    assert content_type == METHODS[method]
    if payload == "text":
        assert len(packed) < len(data) // 5
    assert decompress(packed, content_type) == data
    assert decompress(packed, method) == data
    assert compress(data, content_type)[1] == content_type


def test_gzip_and_zlib_both_write_zlib_format() -> None:
    assert zlib.decompress(compress(b"abc", "gzip")[0]) == b"abc"
    assert zlib.decompress(compress(b"abc", "zlib")[0]) == b"abc"


@pytest.mark.parametrize("method", sorted(set(METHODS.values())))
@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_compressed_data_raises_decode_error(method: str, damage: str) -> None:
    packed, _ = compress(PAYLOADS["text"], method)
    data = b"definitely not compressed" if damage == "garbage" else packed[: len(packed) // 2]
    with pytest.raises(DecodeError, match=f"cannot decompress {method} body") as info:
        decompress(data, method)
    assert info.value.__cause__ is not None


def test_zstd_reads_concatenated_frames_and_frames_without_size() -> None:
    import zstandard

    streamed = zstandard.ZstdCompressor().compressobj()
    frame = streamed.compress(b"a" * 1000) + streamed.flush()
    assert zstandard.get_frame_parameters(frame).content_size == zstandard.CONTENTSIZE_UNKNOWN
    assert decompress(frame + compress(b"bc", "zstd")[0], "zstd") == b"a" * 1000 + b"bc"
    with pytest.raises(DecodeError, match="application/zstd"):
        decompress(frame + b"trailing junk", "zstd")


def test_stdlib_codecs_read_what_python_writes() -> None:
    assert decompress(bz2.compress(b"x" * 99), "bzip2") == b"x" * 99
    assert decompress(lzma.compress(b"x" * 99, format=lzma.FORMAT_ALONE), "xz") == b"x" * 99


def test_unknown_compression() -> None:
    with pytest.raises(ConfigurationError, match=r"cannot compress with 'snappy'.*known: brotli"):
        compress(b"x", "snappy")
    with pytest.raises(DecodeError, match=r"cannot decompress body: unknown compression 'snappy'"):
        decompress(b"x", "snappy")


@pytest.mark.parametrize(
    ("method", "module", "extra"), [("zstd", "zstandard", "zstd"), ("brotli", "brotli", "brotli")]
)
def test_missing_compression_library_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, method: str, module: str, extra: str
) -> None:
    monkeypatch.delitem(compression._CODECS, METHODS[method], raising=False)
    monkeypatch.setitem(sys.modules, module, None)
    message = rf"cannot use {method} compression: {module} is not installed "
    message += rf"\(pip install celeriac\[{extra}\]\)"
    with pytest.raises(ConfigurationError, match=message):
        compress(b"x", method)
    with pytest.raises(ConfigurationError, match=message):
        decompress(b"x", METHODS[method])
    assert METHODS[method] not in compression._CODECS


# -- properties ------------------------------------------------------------------------------

_any_text = st.text(st.characters(exclude_categories=()))
_tz = st.none() | st.builds(
    lambda minutes: timezone(timedelta(minutes=minutes)), st.integers(-23 * 60, 23 * 60)
)
_json_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | _any_text
    | st.binary()
    | st.datetimes(timezones=_tz)
    | st.dates()
    | st.times(timezones=_tz)
    | st.decimals(allow_nan=False)
    | st.uuids()
)
_json_values = st.recursive(
    _json_leaves,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(_any_text, children, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(_json_values)
def test_property_json_round_trip(value: Any) -> None:
    assert_same(json_loads(json_dumps(value)), value)


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**64 - 1)
        | st.floats()
        | st.text()
        | st.binary(),
        lambda children: (
            st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5)
        ),
        max_leaves=30,
    ),
    st.sampled_from(["msgpack", "pickle", "json"]),
)
def test_property_round_trip_every_binary_safe_serializer(value: Any, name: str) -> None:
    content_type, content_encoding, payload = dumps(value, name)
    assert_same(loads(payload, content_type, content_encoding), value)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=4096), st.sampled_from(sorted(METHODS)))
def test_property_compression_round_trip(data: bytes, method: str) -> None:
    assert decompress(*compress(data, method)) == data


def test_loads_takes_transport_buffers_for_every_serializer() -> None:
    # Transports hand over memoryviews of their read buffers.
    buffer = memoryview(dumps({"a": 1}, "yaml")[2])
    assert loads(buffer, YAML, "utf-8") == {"a": 1}  # type: ignore[arg-type]
    assert loads(memoryview(dumps({"a": 1}, "msgpack")[2]), MSGPACK, "binary") == {"a": 1}  # type: ignore[arg-type]
    assert loads(memoryview(pickle.dumps((1,))), PICKLE, "binary") == (1,)  # type: ignore[arg-type]
