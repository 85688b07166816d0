"""Golden tests against the real kombu: what either side writes, the other reads the same."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from kombu import compression as kombu_compression
from kombu import serialization as kombu
from kombu.exceptions import ContentDisallowed as KombuContentDisallowed
from kombu.exceptions import DecodeError as KombuDecodeError
from kombu.exceptions import EncodeError as KombuEncodeError

from celeriac.errors import ContentDisallowed, DecodeError, EncodeError
from celeriac.serialization import (
    accept_content,
    compress,
    decompress,
    dumps,
    json_dumps,
    loads,
)
from tests.unit.test_serialization import TRICKY, _json_values, assert_same

SERIALIZERS = ["json", "msgpack", "yaml", "pickle"]
CONTENT_TYPES = {
    "json": ("application/json", "utf-8"),
    "msgpack": ("application/x-msgpack", "binary"),
    "yaml": ("application/x-yaml", "utf-8"),
    "pickle": ("application/x-python-serialize", "binary"),
}


def kombu_dumps(value: Any, serializer: str) -> tuple[str, str, bytes | str]:
    content_type, content_encoding, payload = kombu.dumps(value, serializer=serializer)
    return content_type, content_encoding, payload


def kombu_loads(payload: bytes | str, content_type: str, content_encoding: str) -> Any:
    return kombu.loads(payload, content_type, content_encoding, accept={content_type})


def kombu_reads(message: tuple[str, str, bytes | str]) -> Any:
    """kombu decodes a ``(content_type, content_encoding, payload)`` triple."""
    content_type, content_encoding, payload = message
    return kombu_loads(payload, content_type, content_encoding)


def we_read(message: tuple[str, str, bytes | str]) -> Any:
    """celeriac decodes a ``(content_type, content_encoding, payload)`` triple."""
    content_type, content_encoding, payload = message
    return loads(payload, content_type, content_encoding)


def kombu_round_trip(value: Any, serializer: str) -> Any:
    """kombu's own answer for ``value``, or the exception class kombu raises."""
    try:
        return kombu_reads(kombu_dumps(value, serializer))
    except KombuEncodeError:
        return EncodeError
    except KombuDecodeError:
        return DecodeError


@pytest.mark.parametrize("name", list(TRICKY))
@pytest.mark.parametrize("serializer", SERIALIZERS)
def test_same_values_both_ways(serializer: str, name: str) -> None:
    value = TRICKY[name]
    want = kombu_round_trip(value, serializer)
    ordered = serializer != "yaml"
    if want is EncodeError:
        with pytest.raises(EncodeError, match=f"cannot encode .* with {serializer}"):
            dumps(value, serializer)
        return
    content_type, content_encoding, payload = kombu_dumps(value, serializer)
    assert (content_type, content_encoding) == CONTENT_TYPES[serializer]
    # kombu -> celeriac, as kombu hands it over (str for text formats) and as bytes on the wire.
    assert_same(loads(payload, content_type, content_encoding), want, ordered)
    if isinstance(payload, str):
        wire = payload.encode(content_encoding)
        assert_same(loads(wire, content_type, content_encoding), want, ordered)
    # celeriac -> kombu.
    ours = dumps(value, serializer)
    assert ours[:2] == CONTENT_TYPES[serializer]
    assert_same(kombu_loads(ours[2], ours[0], ours[1]), want, ordered)


@pytest.mark.parametrize(
    "value",
    [
        {1: "a", None: "b", 2.5: "c", False: "d"},
        {"nested": {7: [1, {8: None}]}},
        [float("nan"), float("inf"), -float("inf")],
        [2**64, -(2**63) - 1, 10**40],
        "\ud83d alone",
        ("tuple", ("inside",)),
    ],
)
def test_json_edge_values_match_kombu(value: Any) -> None:
    want = kombu_round_trip(value, "json")
    assert_same(we_read(kombu_dumps(value, "json")), want)
    assert_same(kombu_reads(dumps(value)), want)


@pytest.mark.parametrize(
    "name",
    [
        "datetime_naive",
        "datetime_utc",
        "datetime_offset",
        "date",
        "time",
        "time_aware",
        "decimal",
        "decimal_long",
        "uuid",
        "bytes_utf8",
        "bytes_binary",
        "bytes_empty",
        "mixed",
    ],
)
def test_json_envelopes_are_identical_to_kombus(name: str) -> None:
    value = {"v": TRICKY[name], "with": [None, "a-b"]}
    # Compared as plain JSON (no envelope decoding), so the envelopes themselves must match.
    kombu_plain = json.loads(kombu_dumps(value, "json")[2])
    assert repr(json.loads(json_dumps(value))) == repr(kombu_plain)  # repr: NaN != NaN
    assert "__type__" in repr(kombu_plain)


def test_msgpack_int_keys_are_refused_on_read_by_both() -> None:
    # kombu packs int keys, then its strict reader (msgpack >= 1.0) refuses them: so do we.
    assert kombu_round_trip({1: "a"}, "msgpack") is DecodeError
    with pytest.raises(DecodeError, match="int is not allowed for map key"):
        we_read(dumps({1: "a"}, "msgpack"))
    with pytest.raises(DecodeError, match="int is not allowed for map key"):
        we_read(kombu_dumps({1: "a"}, "msgpack"))


def test_json_special_tokens_match_kombus_text() -> None:
    value = [float("nan"), float("inf"), -float("inf"), 2**70, {1: None}]
    kombu_text = kombu_dumps(value, "json")[2]
    assert isinstance(kombu_text, str)
    assert json_dumps(value) == kombu_text.replace(", ", ",").replace(": ", ":").encode()


@settings(max_examples=200, deadline=None)
@given(_json_values)
def test_property_json_matches_kombu(value: Any) -> None:
    want = kombu_round_trip(value, "json")
    assert_same(kombu_reads(dumps(value)), want)
    assert_same(we_read(kombu_dumps(value, "json")), want)


def test_accept_content_matches_kombus_mapping() -> None:
    names = ["json", "msgpack", "yaml", "pickle", "application/x-custom"]
    assert accept_content(names) == kombu.prepare_accept_content(names)


@pytest.mark.parametrize("serializer", ["msgpack", "yaml", "pickle"])
def test_both_refuse_what_accept_lacks(serializer: str) -> None:
    content_type, content_encoding, payload = kombu_dumps([1], serializer)
    accept = {"application/json"}
    with pytest.raises(KombuContentDisallowed):
        kombu.loads(payload, content_type, content_encoding, accept=accept)
    with pytest.raises(ContentDisallowed):
        loads(payload, content_type, content_encoding, accept=frozenset(accept))


@pytest.mark.parametrize(
    ("content_type", "content_encoding", "payload"),
    [
        (None, None, b"caf\xc3\xa9"),
        ("application/data", "binary", b"\xff\x00"),
        ("application/text", "utf-8", b"caf\xc3\xa9"),
        ("application/data", "latin-1", b"\xff"),
    ],
)
def test_raw_content_matches_kombu(
    content_type: str | None, content_encoding: str | None, payload: bytes
) -> None:
    want = kombu.loads(payload, content_type, content_encoding, accept=set())
    assert_same(loads(payload, content_type, content_encoding, accept=frozenset()), want)


KOMBU_METHODS = {
    "zlib": "application/x-gzip",
    "gzip": "application/x-gzip",
    "bzip2": "application/x-bz2",
    "lzma": "application/x-lzma",
    "xz": "application/x-lzma",
    "brotli": "application/x-brotli",
    "zstd": "application/zstd",
}
KOMBU_NEEDS = {
    "brotli": "brotli",
    "zstd": "backports.zstd (or Python 3.14's compression.zstd)",
}
BODY = json_dumps([TRICKY["nested"], TRICKY["unicode"], list(range(500))])


@pytest.mark.parametrize("method", list(KOMBU_METHODS))
def test_compression_both_ways(method: str) -> None:
    if KOMBU_METHODS[method] not in kombu_compression.encoders():
        pytest.skip(f"kombu's {method} codec needs {KOMBU_NEEDS[method]}, not installed here")
    kombu_packed, kombu_type = kombu_compression.compress(BODY, method)
    assert kombu_type == KOMBU_METHODS[method]
    assert decompress(kombu_packed, kombu_type) == BODY
    packed, content_type = compress(BODY, method)
    assert content_type == kombu_type
    assert kombu_compression.decompress(packed, content_type) == BODY
