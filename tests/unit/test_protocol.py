"""Building v2 task messages (client side) and saferepr."""

from __future__ import annotations

import json
import os
import socket
import zlib
from collections import OrderedDict
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from celeriac._speedups_py.message import MessageDecoder
from celeriac.protocol import OutgoingMessage, build_task_message, origin_nodename, saferepr

NOW = datetime(2026, 11, 25, 9, 36, 4, 335211, tzinfo=timezone.utc)
V2_KEYS = [
    "lang",
    "task",
    "id",
    "shadow",
    "eta",
    "expires",
    "group",
    "group_index",
    "retries",
    "timelimit",
    "root_id",
    "parent_id",
    "argsrepr",
    "kwargsrepr",
    "origin",
    "ignore_result",
    "replaced_task_nesting",
    "stamped_headers",
    "stamps",
]


def json_dumps(obj: Any, serializer: str) -> tuple[str, str, bytes]:
    assert serializer == "json"
    return "application/json", "utf-8", json.dumps(obj).encode()


def zlib_compress(data: bytes, method: str) -> tuple[bytes, str]:
    assert method == "zlib"
    return zlib.compress(data), "application/x-gzip"


def build(*args: Any, **kwargs: Any) -> OutgoingMessage:
    kwargs.setdefault("dumps", json_dumps)
    kwargs.setdefault("now", NOW)
    return build_task_message(*args, **kwargs)


def test_defaults_match_celery() -> None:
    msg = build("proj.tasks.add", "tid", (2,), {"y": 3})
    assert list(msg.headers) == V2_KEYS
    assert msg.headers == {
        "lang": "py",
        "task": "proj.tasks.add",
        "id": "tid",
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": "tid",
        "parent_id": None,
        "argsrepr": "(2,)",
        "kwargsrepr": "{'y': 3}",
        "origin": origin_nodename(),
        "ignore_result": False,
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
    }
    assert msg.properties == {
        "content_type": "application/json",
        "content_encoding": "utf-8",
        "correlation_id": "tid",
        "reply_to": "",
        "delivery_mode": 2,
    }
    assert json.loads(msg.body) == [
        [2],
        {"y": 3},
        {"callbacks": None, "errbacks": None, "chain": None, "chord": None},
    ]


def test_origin_is_gen_pid_at_host() -> None:
    assert origin_nodename() == f"gen{os.getpid()}@{socket.gethostname()}"


def test_every_option_lands_in_its_header() -> None:
    msg = build(
        "t",
        "tid",
        [],
        {},
        retries=2,
        time_limit=10,
        soft_time_limit=5.5,
        group_id="g",
        group_index=3,
        root_id="r",
        parent_id="p",
        shadow="s",
        origin="gen1@h",
        ignore_result=True,
        replaced_task_nesting=1,
        stamped_headers=["k"],
        stamps={"k": "v"},
        argsrepr="A",
        kwargsrepr="K",
        reply_to="oid",
        priority=7,
    )
    h = msg.headers
    assert h["retries"] == 2
    assert h["timelimit"] == [10, 5.5]
    assert (h["group"], h["group_index"]) == ("g", 3)
    assert (h["root_id"], h["parent_id"], h["shadow"], h["origin"]) == ("r", "p", "s", "gen1@h")
    assert h["ignore_result"] is True
    assert h["replaced_task_nesting"] == 1
    assert (h["stamped_headers"], h["stamps"]) == (["k"], {"k": "v"})
    assert (h["argsrepr"], h["kwargsrepr"]) == ("A", "K")
    assert msg.properties["reply_to"] == "oid"
    assert msg.properties["priority"] == 7


def test_user_headers_merge_after_the_standard_ones() -> None:
    msg = build("t", "tid", [], {}, headers={"custom": 1.5, "retries": 9})
    assert list(msg.headers) == [*V2_KEYS, "custom"]
    assert msg.headers["custom"] == 1.5
    assert msg.headers["retries"] == 9


def test_embed_is_always_an_object() -> None:
    link = [{"task": "cb", "args": [], "kwargs": {}, "options": {}, "subtask_type": None}]
    msg = build("t", "tid", [], {}, callbacks=link, errbacks=link, chain=link, chord=link[0])
    assert json.loads(msg.body)[2] == {
        "callbacks": link,
        "errbacks": link,
        "chain": link,
        "chord": link[0],
    }


@pytest.mark.parametrize(
    ("eta", "expected"),
    [
        (NOW, "2026-11-25T09:36:04.335211+00:00"),
        (NOW.replace(tzinfo=None), "2026-11-25T09:36:04.335211+00:00"),
        (NOW.astimezone(timezone(timedelta(hours=2))), "2026-11-25T09:36:04.335211+00:00"),
        ("2020-01-01T00:00:00Z", "2020-01-01T00:00:00Z"),
        (30, "2026-11-25T09:36:34.335211+00:00"),
    ],
)
def test_eta_is_iso_utc_or_forwarded(eta: Any, expected: str) -> None:
    msg = build("t", "tid", [], {}, eta=eta)
    assert msg.headers["eta"] == expected
    assert "expiration" not in msg.properties


@pytest.mark.parametrize(
    ("expires", "expiration"),
    [
        (NOW + timedelta(seconds=120), "120000"),
        ((NOW + timedelta(seconds=1.5)).replace(tzinfo=None), "1500"),
        (NOW - timedelta(seconds=10), "0"),
        ("2026-11-25T09:37:04.335211+00:00", "60000"),
        (90, "90000"),
    ],
)
def test_expires_sets_expiration_in_ms(expires: Any, expiration: str) -> None:
    msg = build("t", "tid", [], {}, expires=expires)
    assert msg.properties["expiration"] == expiration
    assert msg.headers["expires"] is not None


def test_bad_expires_string_is_rejected() -> None:
    with pytest.raises(ValueError, match="invalid expires value 'soon'"):
        build("t", "tid", [], {}, expires="soon")


def test_args_and_kwargs_types_are_checked() -> None:
    with pytest.raises(TypeError, match="args must be a list or tuple, not str"):
        build("t", "tid", "ab", {})
    with pytest.raises(TypeError, match="kwargs must be a mapping, not list"):
        build("t", "tid", [], [("a", 1)])
    msg = build("t", "tid", None, None)
    assert json.loads(msg.body)[:2] == [[], {}]
    msg = build("t", "tid", [], OrderedDict(a=1))
    assert json.loads(msg.body)[1] == {"a": 1}


def test_compression_header_is_the_mime_type() -> None:
    msg = build("t", "tid", [1], {}, compression="zlib", compress=zlib_compress)
    assert msg.headers["compression"] == "application/x-gzip"
    assert list(msg.headers)[-1] == "compression"
    assert json.loads(zlib.decompress(msg.body))[0] == [1]
    assert "compression" not in build("t", "tid", [], {}).headers


def test_default_codecs_round_trip_through_the_decoder() -> None:
    from celeriac.serialization import loads

    msg = build_task_message(
        "proj.tasks.add",
        "tid",
        [1, "a"],
        {"k": [1]},
        eta=NOW,
        expires=NOW,
        compression="gzip",
        serializer="json",
        now=NOW,
    )

    def decode_loads(
        body: bytes, ctype: str | None, cenc: str | None, compression: str | None
    ) -> Any:
        from celeriac.compression import decompress

        return loads(decompress(body, compression) if compression else body, ctype, cenc)

    task = MessageDecoder(decode_loads).decode(msg.headers, msg.properties, msg.body, {}, 1)
    assert (task.id, task.name, task.eta_at, task.expires_at) == (
        "tid",
        "proj.tasks.add",
        NOW.timestamp(),
        NOW.timestamp(),
    )
    assert task.decode_body()[:2] == ([1, "a"], {"k": [1]})


# -- saferepr --------------------------------------------------------------------------------


def test_saferepr_matches_repr_for_small_values() -> None:
    for value in [(2,), {"y": 3}, [1, "a", None, 1.5], {"b": 1, "a": 2}, (), {}]:
        assert saferepr(value) == repr(value)


def test_saferepr_keeps_dict_order() -> None:
    assert saferepr({"z": 1, "a": 2}) == "{'z': 1, 'a': 2}"


def test_saferepr_is_bounded() -> None:
    text = saferepr(list(range(100_000)))
    assert len(text) == 1024 and text.endswith("...")
    assert len(saferepr("x" * 10_000, maxlen=50)) == 50


def test_saferepr_limits_nesting() -> None:
    assert saferepr([[[[[1]]]]]) == "[[[[...]]]]"
    assert saferepr([[[[[1]]]]], maxlevels=1) == "[[...]]"


def test_saferepr_never_raises() -> None:
    class Broken:
        def __repr__(self) -> str:
            raise RuntimeError("no")

    assert "Broken" in saferepr(Broken())
    assert "Broken" in saferepr([Broken()])
    assert saferepr(10**5000).startswith("<unrepresentable int")


def test_new_task_id_is_a_random_uuid4() -> None:
    import uuid

    from celeriac.protocol import new_task_id

    ids = {new_task_id() for _ in range(1000)}
    assert len(ids) == 1000
    for value in list(ids)[:50]:
        parsed = uuid.UUID(value)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == value
