"""The task-message decoder, run against the compiled module and its pure twin."""

from __future__ import annotations

import json
import pickle
import zlib
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from types import ModuleType
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from celeriac.errors import (
    DecodeError,
    InvalidTaskError,
    MessageTooLarge,
    UnknownMessageError,
)
from tests.conftest import ImplLoader
from tests.samples import celery_headers as sample_headers

TASK_ID = "cc2de619-5e77-4510-bcef-99ac96565033"
EMPTY_BODY = b'[[], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]'
BERLIN = ZoneInfo("Europe/Berlin")


class Loader:
    """A stdlib ``loads(body, content_type, content_encoding, compression)`` that counts."""

    def __init__(self) -> None:
        self.calls: list[tuple[bytes, str | None, str | None, str | None]] = []

    def __call__(
        self, body: bytes, content_type: str | None, encoding: str | None, compression: str | None
    ) -> Any:
        self.calls.append((body, content_type, encoding, compression))
        if compression == "application/x-gzip":
            body = zlib.decompress(body)
        elif compression is not None:
            raise DecodeError(f"unknown compression {compression}")
        if content_type != "application/json":
            raise DecodeError(f"unexpected content type {content_type}")
        try:
            return json.loads(body)
        except ValueError as exc:
            raise DecodeError(str(exc)) from exc


def celery_headers(**overrides: Any) -> dict[str, Any]:
    """The headers Celery 5.7 sends for ``add.delay()`` (section 1.3)."""
    return sample_headers(TASK_ID, **overrides)


def props(**overrides: Any) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "content_type": "application/json",
        "content_encoding": "utf-8",
        "correlation_id": TASK_ID,
        "reply_to": "da1d476a-e1f9-3a00-b71e-7ca92964338c",
        "delivery_mode": 2,
    }
    properties.update(overrides)
    return properties


_DEFAULT: Any = object()
DELIVERY_INFO = {"exchange": "", "routing_key": "celery", "redelivered": False}


@pytest.fixture
def mod(impl: ImplLoader) -> ModuleType:
    return impl("message")


@pytest.fixture
def loader() -> Loader:
    return Loader()


@pytest.fixture
def decode(mod: ModuleType, loader: Loader) -> Callable[..., Any]:
    decoder = mod.MessageDecoder(loader)

    def run(
        headers: Any = _DEFAULT,
        properties: dict[str, Any] | None = None,
        body: bytes = EMPTY_BODY,
        delivery_info: dict[str, Any] | None = None,
        tag: Any = 7,
    ) -> Any:
        return decoder.decode(
            celery_headers() if headers is _DEFAULT else headers,
            props() if properties is None else properties,
            body,
            DELIVERY_INFO if delivery_info is None else delivery_info,
            tag,
        )

    return run


# -- protocol v2 -----------------------------------------------------------------------------


def test_typical_message_fields(decode: Callable[..., Any], loader: Loader) -> None:
    headers = celery_headers(custom=1.5)
    msg = decode(headers)
    assert msg.protocol == 2
    assert msg.id == TASK_ID
    assert msg.name == "proj.tasks.add"
    assert msg.shadow is None
    assert msg.lang == "py"
    assert msg.eta is None and msg.eta_at is None
    assert msg.expires is None and msg.expires_at is None
    assert msg.group is None and msg.group_index is None
    assert msg.retries == 0
    assert msg.time_limit is None and msg.soft_time_limit is None
    assert msg.root_id == TASK_ID
    assert msg.parent_id is None
    assert msg.argsrepr == "()" and msg.kwargsrepr == "{}"
    assert msg.origin == "gen15995@vm"
    assert msg.ignore_result is False
    assert msg.replaced_task_nesting == 0
    assert msg.stamped_headers is None
    assert msg.stamps == {}
    assert msg.headers is headers
    assert msg.headers["custom"] == 1.5
    assert msg.correlation_id == TASK_ID
    assert msg.reply_to == "da1d476a-e1f9-3a00-b71e-7ca92964338c"
    assert msg.priority is None
    assert msg.content_type == "application/json"
    assert msg.content_encoding == "utf-8"
    assert msg.compression is None
    assert msg.body == EMPTY_BODY
    assert msg.delivery_info is DELIVERY_INFO
    assert msg.delivery_tag == 7
    assert loader.calls == []


def test_every_header_is_read(decode: Callable[..., Any]) -> None:
    msg = decode(
        celery_headers(
            shadow="add-alias",
            lang="rb",
            group="g-1",
            group_index=4,
            retries=3,
            timelimit=[10, 5.5],
            root_id="root",
            parent_id="parent",
            argsrepr="(2,)",
            kwargsrepr="{'y': 3}",
            origin="gen1@host",
            ignore_result=True,
            replaced_task_nesting=2,
            stamped_headers=["on_stamp"],
            stamps={"on_stamp": ["a", "b"]},
            compression="application/x-gzip",
        ),
        body=zlib.compress(EMPTY_BODY),
    )
    assert msg.shadow == "add-alias"
    assert msg.lang == "rb"
    assert msg.group == "g-1" and msg.group_index == 4
    assert msg.retries == 3
    assert msg.time_limit == 10.0 and type(msg.time_limit) is float
    assert msg.soft_time_limit == 5.5
    assert (msg.root_id, msg.parent_id) == ("root", "parent")
    assert (msg.argsrepr, msg.kwargsrepr) == ("(2,)", "{'y': 3}")
    assert msg.origin == "gen1@host"
    assert msg.ignore_result is True
    assert msg.replaced_task_nesting == 2
    assert msg.stamped_headers == ["on_stamp"]
    assert msg.stamps == {"on_stamp": ["a", "b"]}
    assert msg.compression == "application/x-gzip"
    assert msg.decode_body() == (
        [],
        {},
        {**dict.fromkeys(("callbacks", "errbacks"))}
        | {
            "chain": None,
            "chord": None,
        },
    )


def test_missing_optional_headers_take_defaults(decode: Callable[..., Any]) -> None:
    msg = decode({"task": "t", "id": "abc"})
    assert msg.lang == "py"
    assert msg.retries == 0
    assert (msg.time_limit, msg.soft_time_limit) == (None, None)
    assert msg.stamps == {}
    assert msg.ignore_result is False
    assert msg.replaced_task_nesting == 0
    for field in ("shadow", "eta", "expires", "group", "group_index", "root_id", "parent_id"):
        assert getattr(msg, field) is None, field
    for field in ("argsrepr", "kwargsrepr", "origin", "stamped_headers"):
        assert getattr(msg, field) is None, field


def test_none_values_take_defaults(decode: Callable[..., Any]) -> None:
    msg = decode(
        celery_headers(
            lang=None,
            retries=None,
            timelimit=None,
            stamps=None,
            ignore_result=None,
            replaced_task_nesting=None,
        )
    )
    assert msg.lang == "py"
    assert msg.retries == 0
    assert msg.time_limit is None
    assert msg.stamps == {}
    assert msg.ignore_result is False
    assert msg.replaced_task_nesting == 0


def test_tuples_accepted_for_lists(decode: Callable[..., Any]) -> None:
    msg = decode(celery_headers(timelimit=(3, None), stamped_headers=("a", "b")))
    assert (msg.time_limit, msg.soft_time_limit) == (3.0, None)
    assert msg.stamped_headers == ["a", "b"]


def test_non_dict_mapping_headers_are_read(decode: Callable[..., Any]) -> None:
    from types import MappingProxyType

    msg = decode(MappingProxyType(celery_headers(retries=2)))
    assert msg.retries == 2
    assert type(msg.headers) is dict


def test_id_falls_back_to_correlation_id(decode: Callable[..., Any]) -> None:
    headers = celery_headers()
    del headers["id"]
    msg = decode(headers, props(correlation_id="from-props"))
    assert msg.id == "from-props"
    msg = decode(celery_headers(id=None), props(correlation_id="from-props"))
    assert msg.id == "from-props"


def test_no_id_anywhere_is_invalid(decode: Callable[..., Any]) -> None:
    properties = props()
    del properties["correlation_id"]
    with pytest.raises(InvalidTaskError, match="no id header and no correlation_id"):
        decode(celery_headers(id=None), properties)


def test_priority_from_properties_then_delivery_info(decode: Callable[..., Any]) -> None:
    assert decode(properties=props(priority=3)).priority == 3
    assert decode(delivery_info={"priority": 5}).priority == 5
    assert decode(properties=props(priority=3), delivery_info={"priority": 5}).priority == 3
    assert decode(properties=props(priority=0), delivery_info={"priority": 5}).priority == 0


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("task", 5, "task name is not a string: 5"),
        ("task", None, "task name is not a string: None"),
        ("id", 12, "id is not a string: 12"),
        ("shadow", 1, "shadow is not a string: 1"),
        ("lang", ["py"], "lang is not a string: ['py']"),
        ("group", b"g", "group is not a string: b'g'"),
        ("group_index", "1", "group_index is not an int: '1'"),
        ("group_index", True, "group_index is not an int: True"),
        ("retries", "3", "retries is not an int: '3'"),
        ("retries", 1.0, "retries is not an int: 1.0"),
        ("retries", False, "retries is not an int: False"),
        ("timelimit", 10, "timelimit is not a [hard, soft] pair of numbers: 10"),
        ("timelimit", [10], "timelimit is not a [hard, soft] pair of numbers: [10]"),
        ("timelimit", [1, 2, 3], "pair of numbers: [1, 2, 3]"),
        ("timelimit", ["10", None], "pair of numbers: ['10', None]"),
        ("timelimit", [None, True], "pair of numbers: [None, True]"),
        ("root_id", 1, "root_id is not a string: 1"),
        ("parent_id", 1, "parent_id is not a string: 1"),
        ("argsrepr", 1, "argsrepr is not a string: 1"),
        ("kwargsrepr", {}, "kwargsrepr is not a string: {}"),
        ("origin", 1, "origin is not a string: 1"),
        ("ignore_result", 1, "ignore_result is not a bool: 1"),
        ("replaced_task_nesting", "0", "replaced_task_nesting is not an int: '0'"),
        ("stamped_headers", "abc", "stamped_headers is not a list of strings: 'abc'"),
        ("stamped_headers", ["a", 1], "stamped_headers is not a list of strings: ['a', 1]"),
        ("stamps", [1], "stamps is not a mapping: [1]"),
        ("eta", "tomorrow", "invalid eta value 'tomorrow'"),
        ("eta", 12345, "invalid eta value 12345"),
        ("eta", "", "invalid eta value ''"),
        ("expires", "2026-13-01T00:00:00", "invalid expires value '2026-13-01T00:00:00'"),
    ],
)
def test_bad_header_values(decode: Callable[..., Any], field: str, value: Any, needle: str) -> None:
    with pytest.raises(InvalidTaskError) as info:
        decode(celery_headers(**{field: value}))
    text = str(info.value)
    assert text.startswith("cannot decode task message ")
    assert needle in text
    if field != "id":
        assert TASK_ID in text


def test_error_message_bounds_long_values(decode: Callable[..., Any]) -> None:
    long_id = "x" * 300
    with pytest.raises(InvalidTaskError) as info:
        decode(celery_headers(id=long_id, retries="9" * 500))
    text = str(info.value)
    assert f"cannot decode task message {'x' * 40}…: retries is not an int: '999" in text
    assert len(text) < 220


def test_headers_not_a_mapping(decode: Callable[..., Any]) -> None:
    with pytest.raises(UnknownMessageError, match=rf"{TASK_ID}: headers are not a mapping: \["):
        decode(["task", "x"])


# -- ETA and expires -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "2026-11-25T09:38:07.751440+00:00",
            datetime(2026, 11, 25, 9, 38, 7, 751440, timezone.utc),
        ),
        ("2026-11-25T09:38:07Z", datetime(2026, 11, 25, 9, 38, 7, tzinfo=timezone.utc)),
        ("2026-11-25T10:38:07+01:00", datetime(2026, 11, 25, 9, 38, 7, tzinfo=timezone.utc)),
        ("2026-11-25T09:38:07", datetime(2026, 11, 25, 9, 38, 7, tzinfo=timezone.utc)),
    ],
)
def test_eta_and_expires_parse_to_timestamps(
    decode: Callable[..., Any], text: str, expected: datetime
) -> None:
    msg = decode(celery_headers(eta=text, expires=text))
    assert msg.eta == text and msg.expires == text
    assert msg.eta_at == expected.timestamp()
    assert msg.expires_at == expected.timestamp()


def test_naive_times_are_in_the_decoder_zone(mod: ModuleType, loader: Loader) -> None:
    decoder = mod.MessageDecoder(loader, tz=BERLIN)
    msg = decoder.decode(
        celery_headers(eta="2026-07-01T12:00:00", expires="2026-07-01T12:00:00+00:00"),
        props(),
        EMPTY_BODY,
        {},
        1,
    )
    # Berlin is UTC+2 in July: a naive noon there is 10:00 UTC; an aware value is untouched.
    assert msg.eta_at == datetime(2026, 7, 1, 10, 0, tzinfo=timezone.utc).timestamp()
    assert msg.expires_at == datetime(2026, 7, 1, 12, 0, tzinfo=timezone.utc).timestamp()
    assert decoder.tz is BERLIN


def test_datetime_header_values_are_accepted(decode: Callable[..., Any]) -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=-5)))
    msg = decode(celery_headers(eta=when))
    assert msg.eta == "2026-01-02T03:04:05-05:00"
    assert msg.eta_at == when.timestamp()


# -- lazy body -------------------------------------------------------------------------------


def test_body_is_decoded_lazily_once(decode: Callable[..., Any], loader: Loader) -> None:
    body = json.dumps(
        [
            [2, "x"],
            {"y": 3},
            {
                "callbacks": [{"task": "cb"}],
                "errbacks": [{"task": "eb"}],
                "chain": [{"task": "c2"}],
                "chord": {"task": "body"},
            },
        ]
    ).encode()
    msg = decode(celery_headers(compression=None), body=body)
    assert loader.calls == []
    args, kwargs, embed = msg.decode_body()
    assert loader.calls == [(body, "application/json", "utf-8", None)]
    assert (args, kwargs) == ([2, "x"], {"y": 3})
    assert msg.decode_body() == (args, kwargs, embed)
    assert msg.args == [2, "x"] and msg.kwargs == {"y": 3}
    assert msg.embed is embed
    assert msg.callbacks == [{"task": "cb"}]
    assert msg.errbacks == [{"task": "eb"}]
    assert msg.chain == [{"task": "c2"}]
    assert msg.chord == {"task": "body"}
    assert len(loader.calls) == 1


def test_conveniences_decode_on_first_use(decode: Callable[..., Any], loader: Loader) -> None:
    msg = decode(
        body=b'[[1], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]'
    )
    assert msg.args == [1]
    assert len(loader.calls) == 1


def test_compression_header_is_passed_to_loads(decode: Callable[..., Any], loader: Loader) -> None:
    body = zlib.compress(b'[[1, 2], {"a": 1}, {}]')
    msg = decode(celery_headers(compression="application/x-gzip"), body=body)
    assert msg.decode_body() == ([1, 2], {"a": 1}, {})
    assert loader.calls[0][3] == "application/x-gzip"


def test_decode_errors_propagate_and_are_not_cached(
    decode: Callable[..., Any], loader: Loader
) -> None:
    msg = decode(body=b"[[], {}, ")
    with pytest.raises(DecodeError):
        msg.decode_body()
    with pytest.raises(DecodeError):
        msg.decode_body()
    assert len(loader.calls) == 2


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b'{"a": 1}', "body is not a 3-item list: {'a': 1}"),
        (b"[[], {}]", "body is not a 3-item list: [[], {}]"),
        (b'"text"', "body is not a 3-item list: 'text'"),
        (b"null", "body is not a 3-item list: None"),
        (b"[{}, {}, {}]", "args is not a list: {}"),
        (b'["a", {}, {}]', "args is not a list: 'a'"),
        (b"[[], [], {}]", "kwargs is not a mapping: []"),
        (b"[[], null, {}]", "kwargs is not a mapping: None"),
        (b"[[], {}, []]", "embed is not a mapping: []"),
        (b"[[], {}, 5]", "embed is not a mapping: 5"),
    ],
)
def test_bad_body_shapes(decode: Callable[..., Any], body: bytes, needle: str) -> None:
    msg = decode(body=body)
    with pytest.raises(InvalidTaskError) as info:
        msg.decode_body()
    assert str(info.value) == f"cannot decode task message {TASK_ID}: {needle}"


def test_null_embed_is_empty(decode: Callable[..., Any]) -> None:
    msg = decode(body=b"[[1], {}, null]")
    assert msg.decode_body() == ([1], {}, {})
    assert msg.callbacks is None and msg.chain is None


def test_tuple_body_from_a_binary_serializer(mod: ModuleType) -> None:
    decoder = mod.MessageDecoder(lambda *_: ((1, 2), {"k": "v"}, {"chain": None}))
    msg = decoder.decode(celery_headers(), props(content_type="x"), b"...", {}, 1)
    assert msg.decode_body() == ([1, 2], {"k": "v"}, {"chain": None})


# -- size limit ------------------------------------------------------------------------------


def test_max_body_size(mod: ModuleType, loader: Loader) -> None:
    decoder = mod.MessageDecoder(loader, max_body_size=len(EMPTY_BODY))
    assert decoder.max_body_size == len(EMPTY_BODY)
    decoder.decode(celery_headers(), props(), EMPTY_BODY, {}, 1)
    with pytest.raises(MessageTooLarge) as info:
        decoder.decode(celery_headers(), props(), EMPTY_BODY + b" ", {}, 1)
    assert str(info.value) == (
        f"cannot decode task message {TASK_ID}: body is {len(EMPTY_BODY) + 1} bytes, "
        f"over the limit of {len(EMPTY_BODY)}"
    )
    # v1 too, and before its body is decoded
    with pytest.raises(MessageTooLarge):
        decoder.decode({}, props(), b" " * 1000, {}, 1)
    assert loader.calls == []


def test_decoder_arguments_are_checked(mod: ModuleType, loader: Loader) -> None:
    with pytest.raises(TypeError, match="loads must be callable"):
        mod.MessageDecoder("json")
    with pytest.raises(TypeError, match="max_body_size must be an int"):
        mod.MessageDecoder(loader, max_body_size=1.5)
    with pytest.raises(ValueError, match="max_body_size must be >= 0"):
        mod.MessageDecoder(loader, max_body_size=-1)


# -- protocol v1 and hybrid ------------------------------------------------------------------


V1_BODY = {
    "task": "proj.tasks.add",
    "id": "4cc7438e-afd4-4f8f-a2f3-f46567e7ca77",
    "args": [2, 2],
    "kwargs": {"z": 1},
    "retries": 1,
    "eta": "2009-11-17T12:30:56.527191",
    "expires": None,
    "utc": True,
    "callbacks": [{"task": "cb"}],
    "errbacks": None,
    "timelimit": [30, 20],
    "taskset": "ts-1",
    "group": None,
    "group_index": None,
    "chord": {"task": "chord-body"},
}


def test_v1_message_is_converted(decode: Callable[..., Any], loader: Loader) -> None:
    body = json.dumps(V1_BODY).encode()
    msg = decode({}, props(correlation_id=None), body=body)
    assert len(loader.calls) == 1
    assert msg.protocol == 1
    assert msg.id == V1_BODY["id"]
    assert msg.name == "proj.tasks.add"
    assert msg.retries == 1
    assert (msg.time_limit, msg.soft_time_limit) == (30.0, 20.0)
    assert msg.group == "ts-1"
    assert msg.eta == "2009-11-17T12:30:56.527191"
    assert msg.eta_at == datetime(2009, 11, 17, 12, 30, 56, 527191, timezone.utc).timestamp()
    assert msg.lang == "py"
    assert msg.root_id is None and msg.parent_id is None and msg.origin is None
    assert msg.headers == {}
    assert msg.decode_body() == (
        [2, 2],
        {"z": 1},
        {
            "callbacks": [{"task": "cb"}],
            "errbacks": None,
            "chain": None,
            "chord": {"task": "chord-body"},
        },
    )
    assert len(loader.calls) == 1


def test_v1_with_no_headers_at_all(decode: Callable[..., Any]) -> None:
    body = json.dumps({"task": "t", "id": "i1"}).encode()
    msg = decode(None, body=body)
    assert (msg.protocol, msg.name, msg.id, msg.group) == (1, "t", "i1", None)
    assert msg.decode_body() == (
        [],
        {},
        {"callbacks": None, "errbacks": None, "chain": None, "chord": None},
    )


def test_v1_local_time_uses_decoder_zone(mod: ModuleType, loader: Loader) -> None:
    decoder = mod.MessageDecoder(loader, tz=BERLIN)
    naive = "2026-01-15T12:00:00"
    local = decoder.decode(
        {}, props(), json.dumps({**V1_BODY, "eta": naive, "utc": False}).encode(), {}, 1
    )
    utc = decoder.decode({}, props(), json.dumps({**V1_BODY, "eta": naive}).encode(), {}, 1)
    assert local.eta_at == datetime(2026, 1, 15, 11, 0, tzinfo=timezone.utc).timestamp()
    assert utc.eta_at == datetime(2026, 1, 15, 12, 0, tzinfo=timezone.utc).timestamp()


def test_v1_id_falls_back_to_correlation_id(decode: Callable[..., Any]) -> None:
    body = json.dumps({"task": "t", "args": []}).encode()
    assert decode({}, props(correlation_id="cid"), body=body).id == "cid"
    with pytest.raises(InvalidTaskError, match="no id in the v1 body"):
        decode({}, props(correlation_id=None), body=body)


def test_v1_bad_kwargs_fail_at_decode(decode: Callable[..., Any]) -> None:
    body = json.dumps({**V1_BODY, "kwargs": [1]}).encode()
    with pytest.raises(InvalidTaskError, match="kwargs is not a mapping: \\[1\\]"):
        decode({}, body=body)


@pytest.mark.parametrize("body", [b"[[], {}, {}]", b'{"args": []}', b'"hello"', b"null"])
def test_not_a_task_message(decode: Callable[..., Any], body: bytes) -> None:
    with pytest.raises(UnknownMessageError) as info:
        decode({"x-custom": 1}, body=body)
    assert "not a task message" in str(info.value)
    assert TASK_ID in str(info.value)


def test_undecodable_body_without_task_header(decode: Callable[..., Any]) -> None:
    with pytest.raises(DecodeError):
        decode({}, body=b"\xff not json")


def test_hybrid_body_fills_in_missing_headers(decode: Callable[..., Any], loader: Loader) -> None:
    body = json.dumps({**V1_BODY, "id": "body-id", "retries": 4, "kwargs": {"k": 1}}).encode()
    headers = {"task": "proj.tasks.add", "retries": 9, "custom": "yes"}
    msg = decode(headers, body=body)
    assert msg.protocol == 2
    assert len(loader.calls) == 1
    assert msg.id == "body-id"
    assert msg.retries == 9  # the headers win
    assert (msg.time_limit, msg.soft_time_limit) == (30.0, 20.0)
    assert msg.eta == V1_BODY["eta"]
    assert msg.headers["custom"] == "yes" and msg.headers["id"] == "body-id"
    assert msg.decode_body() == (
        [2, 2],
        {"k": 1},
        {
            "callbacks": [{"task": "cb"}],
            "errbacks": None,
            "chain": None,
            "chord": {"task": "chord-body"},
        },
    )
    assert len(loader.calls) == 1


def test_hybrid_body_with_complete_headers_stays_lazy(
    decode: Callable[..., Any], loader: Loader
) -> None:
    msg = decode(celery_headers(), body=json.dumps(V1_BODY).encode())
    assert loader.calls == []
    assert msg.id == TASK_ID and msg.retries == 0
    assert msg.args == [2, 2] and msg.chain is None and msg.chord == {"task": "chord-body"}


def test_incomplete_headers_with_list_body_decode_once(
    decode: Callable[..., Any], loader: Loader
) -> None:
    msg = decode({"task": "t", "id": "i"}, body=b"[[5], {}, {}]")
    assert len(loader.calls) == 1
    assert msg.decode_body() == ([5], {}, {})
    assert len(loader.calls) == 1


# -- the object ------------------------------------------------------------------------------


def test_repr_and_fields(mod: ModuleType, decode: Callable[..., Any]) -> None:
    msg = decode()
    assert repr(msg) == f"<TaskMessage proj.tasks.add[{TASK_ID}] v2>"
    assert set(mod.TASK_MESSAGE_FIELDS) >= {"id", "name", "eta_at", "headers", "delivery_tag"}
    for field in mod.TASK_MESSAGE_FIELDS:
        getattr(msg, field)


def test_pickles_before_and_after_body_decode(mod: ModuleType, decode: Callable[..., Any]) -> None:
    # the prefork pool may ship messages to children
    msg = decode(
        celery_headers(eta="2030-01-01T00:00:00Z", custom=1), body=b'[[1], {"a": 2}, null]'
    )
    clone = pickle.loads(pickle.dumps(msg))
    assert type(clone) is type(msg)
    for field in mod.TASK_MESSAGE_FIELDS:
        assert getattr(clone, field) == getattr(msg, field), field
    assert clone.decode_body() == ([1], {"a": 2}, {})
    msg.decode_body()
    assert pickle.loads(pickle.dumps(msg)).kwargs == {"a": 2}


def test_many_messages_keep_their_own_fields(decode: Callable[..., Any]) -> None:
    # the compiled class reuses freed objects from a freelist; nothing may leak between them
    messages = [decode(celery_headers(id=f"id-{i}", retries=i)) for i in range(600)]
    del messages[::2]
    again = [decode(celery_headers(id=f"new-{i}")) for i in range(300)]
    assert [m.retries for m in messages] == list(range(1, 600, 2))
    assert all(m.retries == 0 and m.id == f"new-{i}" for i, m in enumerate(again))
