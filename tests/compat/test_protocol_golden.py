"""Golden tests against the real Celery: its messages decode the same in our decoder, and
messages we build are read by Celery's worker (``celery.worker.request.Request``) as it reads
its own.

Celery publishes through kombu's in-memory transport, so what we decode is exactly what Celery
puts on the wire (headers, properties and serialized body), for each serializer.
"""

from __future__ import annotations

import base64
import copy
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from types import ModuleType
from typing import Any

import pytest

celery = pytest.importorskip("celery")

from celery import Celery  # noqa: E402
from celery.worker.request import Request  # noqa: E402
from kombu.message import Message  # noqa: E402

from celeriac.compression import decompress  # noqa: E402
from celeriac.protocol import OutgoingMessage, build_task_message  # noqa: E402
from celeriac.serialization import dumps, loads  # noqa: E402
from tests.conftest import ImplLoader  # noqa: E402

SERIALIZERS = ["json", "msgpack", "yaml", "pickle"]
CONTENT_TYPES = {
    "application/json",
    "application/x-msgpack",
    "application/x-yaml",
    "application/x-python-serialize",
}
ORIGIN = "gen42@golden"
REPLY_TO = "da1d476a-e1f9-3a00-b71e-7ca92964338c"


def our_loads(
    body: bytes, content_type: str | None, encoding: str | None, compression: str | None
) -> Any:
    if compression:
        body = decompress(body, compression)
    return loads(body, content_type, encoding, accept=frozenset(CONTENT_TYPES))


@pytest.fixture(scope="module")
def app() -> Iterator[Celery]:
    app = Celery("golden", broker="memory://", backend=None, set_as_current=False)
    app.conf.accept_content = ["json", "msgpack", "yaml", "pickle"]
    app.conf.enable_utc = True
    app.conf.timezone = "UTC"

    @app.task(name="proj.tasks.add", shared=False)
    def add(*args: Any, **kwargs: Any) -> Any:
        return args, kwargs

    yield app
    app.close()


@pytest.fixture
def mod(impl: ImplLoader) -> ModuleType:
    return impl("message")


@dataclass
class Wire:
    """One message as a broker delivers it, and the kombu Message Celery's worker gets."""

    headers: dict[str, Any]
    properties: dict[str, Any]
    body: bytes
    delivery_info: dict[str, Any]
    kombu: Message

    def decode(self, mod: ModuleType) -> Any:
        decoder = mod.MessageDecoder(our_loads)
        return decoder.decode(self.headers, self.properties, self.body, self.delivery_info, 1)


def celery_publish(app: Celery, *, signature: Any = None, **options: Any) -> Wire:
    """Publish with Celery's own client and fetch the raw message back."""
    queue = f"golden-{uuid.uuid4().hex}"
    add = app.tasks["proj.tasks.add"]
    with app.connection_for_write() as conn:
        if signature is not None:
            signature.apply_async(connection=conn, queue=queue, **options)
        else:
            args = options.pop("args", (2,))
            kwargs = options.pop("kwargs", {"y": 3})
            add.apply_async(args, kwargs, connection=conn, queue=queue, **options)
        channel = conn.default_channel
        raw = channel._get(queue)
        message = channel.Message(copy.deepcopy(raw), channel=channel)
    message.accept = CONTENT_TYPES
    # The in-memory transport keeps kombu's envelope; unwrap it as an AMQP client would.
    properties = dict(raw["properties"])
    delivery_info = properties.pop("delivery_info")
    for key in ("body_encoding", "delivery_tag"):
        properties.pop(key)
    properties["content_type"] = raw["content-type"]
    properties["content_encoding"] = raw["content-encoding"]
    return Wire(raw["headers"], properties, base64.b64decode(raw["body"]), delivery_info, message)


def celery_request(app: Celery, message: Message | Wire) -> Request:
    if isinstance(message, Wire):
        message = message.kombu
    return Request(message, app=app, task=app.tasks["proj.tasks.add"])


def stamp(when: datetime | None) -> float | None:
    return None if when is None else when.timestamp()


def assert_same_view(msg: Any, req: Request) -> None:
    """What our decoder read equals what Celery's worker reads from the same message."""
    rd = req.request_dict
    assert msg.id == req.id
    assert (msg.shadow or msg.name) == req.name
    assert msg.name == req.type
    assert msg.eta_at == stamp(req.eta)
    assert msg.expires_at == stamp(req.expires)
    assert [msg.time_limit, msg.soft_time_limit] == list(req.time_limits)
    assert (msg.root_id, msg.parent_id) == (req.root_id, req.parent_id)
    assert (msg.group, msg.group_index) == (req.group, req.group_index)
    assert msg.retries == rd["retries"]
    assert (msg.argsrepr, msg.kwargsrepr) == (req.argsrepr, req.kwargsrepr)
    assert msg.origin == rd["origin"]
    assert msg.ignore_result == req.ignore_result
    assert msg.replaced_task_nesting == req.replaced_task_nesting
    assert msg.stamped_headers == rd["stamped_headers"]
    assert msg.stamps == (rd["stamps"] or {})
    assert msg.reply_to == req.reply_to
    assert msg.correlation_id == req.correlation_id
    assert msg.priority == req.delivery_info["priority"]
    args, kwargs, embed = msg.decode_body()
    assert args == list(req.args)
    assert kwargs == req.kwargs
    assert embed == req._payload[2]
    assert msg.chord == req.chord
    assert msg.errbacks == req.errbacks
    for key, value in msg.headers.items():
        assert rd[key] == value


# -- (a) Celery builds, we decode -------------------------------------------------------------

NOW = datetime.now(timezone.utc).replace(microsecond=123456)
CELERY_CASES: dict[str, dict[str, Any]] = {
    "plain": {},
    "countdown-expires": {"countdown": 30, "expires": 120},
    "eta-expires-datetime": {"eta": NOW + timedelta(hours=1), "expires": NOW + timedelta(hours=2)},
    "time-limits": {"time_limit": 10, "soft_time_limit": 5},
    "group": {"group_id": "grp-1", "group_index": 3},
    "priority": {"priority": 7},
    "custom-headers": {"headers": {"custom": 1.5, "x-trace": "abc"}},
    "ids-and-shadow": {
        "root_id": "root-1",
        "parent_id": "parent-1",
        "shadow": "add-alias",
        "retries": 2,
        "task_id": "fixed-task-id",
    },
    "stamps": {"stamped_headers": ["mystamp"], "mystamp": "v1"},
    "ignore-result": {"ignore_result": True},
    "compressed": {"compression": "zlib"},
    "args": {"args": [1, "two", [3.5, None]], "kwargs": {"k": {"nested": True}}},
}


@pytest.mark.parametrize("serializer", SERIALIZERS)
@pytest.mark.parametrize("case", list(CELERY_CASES))
def test_celery_messages_decode_as_celery_reads_them(
    app: Celery, mod: ModuleType, serializer: str, case: str
) -> None:
    wire = celery_publish(app, serializer=serializer, **CELERY_CASES[case])
    msg = wire.decode(mod)
    req = celery_request(app, wire)
    assert msg.protocol == 2
    assert msg.content_type == wire.kombu.content_type
    assert_same_view(msg, req)


@pytest.mark.parametrize("serializer", ["json", "msgpack", "pickle"])
def test_celery_links_and_chains_decode(app: Celery, mod: ModuleType, serializer: str) -> None:
    add = app.tasks["proj.tasks.add"]
    wire = celery_publish(app, serializer=serializer, link=add.s(10), link_error=add.si(0))
    msg = wire.decode(mod)
    assert_same_view(msg, celery_request(app, wire))
    assert [list(s["args"]) for s in msg.callbacks] == [[10]]
    assert msg.errbacks[0]["immutable"] is True

    wire = celery_publish(app, signature=add.s(1) | add.s(2) | add.s(3), serializer=serializer)
    msg = wire.decode(mod)
    assert_same_view(msg, celery_request(app, wire))
    assert [list(s["args"]) for s in msg.chain] == [[3], [2]]  # reversed: next task last


def test_celery_v1_message_decodes(app: Celery, mod: ModuleType) -> None:
    task_id = str(uuid.uuid4())
    eta = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    _, _, body, _ = app.amqp.as_task_v1(
        task_id,
        "proj.tasks.add",
        (2, 2),
        {"z": 1},
        eta=eta,
        group_id="ts",
        retries=1,
        time_limit=9,
        soft_time_limit=8,
    )
    content_type, encoding, data = dumps(body, "json")
    msg = mod.MessageDecoder(our_loads).decode(
        {}, {"content_type": content_type, "content_encoding": encoding}, data, {}, 1
    )
    assert (msg.protocol, msg.id, msg.name, msg.group, msg.retries) == (
        1,
        task_id,
        "proj.tasks.add",
        "ts",
        1,
    )
    assert (msg.time_limit, msg.soft_time_limit) == (9.0, 8.0)
    assert msg.eta_at == eta.timestamp()
    assert msg.decode_body()[:2] == ([2, 2], {"z": 1})


# -- (b) we build, Celery decodes ------------------------------------------------------------


def to_kombu(message: OutgoingMessage) -> Message:
    return Message(
        body=message.body,
        delivery_tag=1,
        content_type=message.properties["content_type"],
        content_encoding=message.properties["content_encoding"],
        delivery_info={
            "exchange": "",
            "routing_key": "celery",
            "priority": message.properties.get("priority"),
        },
        properties=message.properties,
        headers=message.headers,
        accept=CONTENT_TYPES,
    )


OUR_CASES: dict[str, dict[str, Any]] = {
    "plain": {},
    "eta-expires": {"eta": NOW + timedelta(minutes=5), "expires": NOW + timedelta(hours=1)},
    "naive-eta": {"eta": (NOW + timedelta(minutes=5)).replace(tzinfo=None)},
    "string-eta": {"eta": "2030-01-01T00:00:00+00:00", "expires": "2030-01-02T00:00:00+00:00"},
    "time-limits": {"time_limit": 30, "soft_time_limit": 20.5},
    "workflow-ids": {"root_id": "r", "parent_id": "p", "group_id": "g", "group_index": 2},
    "shadow-retries": {"shadow": "alias", "retries": 4, "ignore_result": True},
    "stamps": {"stamped_headers": ["s1"], "stamps": {"s1": ["a"]}},
    "custom": {"headers": {"custom": 1.5}, "priority": 3, "reply_to": REPLY_TO},
    "embed": {
        "callbacks": [
            {
                "task": "cb",
                "args": [],
                "kwargs": {},
                "options": {},
                "subtask_type": None,
                "immutable": False,
            }
        ],
        "errbacks": [
            {
                "task": "eb",
                "args": [],
                "kwargs": {},
                "options": {},
                "subtask_type": None,
                "immutable": True,
            }
        ],
        "chain": [
            {
                "task": "next",
                "args": [1],
                "kwargs": {},
                "options": {},
                "subtask_type": None,
                "immutable": False,
            }
        ],
        "chord": {
            "task": "body",
            "args": [],
            "kwargs": {},
            "options": {},
            "subtask_type": None,
            "immutable": False,
        },
    },
    "compressed": {"compression": "zlib"},
}


@pytest.mark.parametrize("serializer", SERIALIZERS)
@pytest.mark.parametrize("case", list(OUR_CASES))
def test_our_messages_are_read_by_celery(
    app: Celery, mod: ModuleType, serializer: str, case: str
) -> None:
    options = OUR_CASES[case]
    task_id = str(uuid.uuid4())
    out = build_task_message(
        "proj.tasks.add", task_id, [2], {"y": 3}, serializer=serializer, **options
    )
    req = celery_request(app, to_kombu(out))
    assert req.id == task_id
    assert req.type == "proj.tasks.add"
    assert req.name == options.get("shadow", "proj.tasks.add")
    assert list(req.args) == [2] and req.kwargs == {"y": 3}
    assert req.root_id == options.get("root_id", task_id)
    assert req.parent_id == options.get("parent_id")
    assert (req.group, req.group_index) == (options.get("group_id"), options.get("group_index"))
    assert list(req.time_limits) == [options.get("time_limit"), options.get("soft_time_limit")]
    assert req.request_dict["retries"] == options.get("retries", 0)
    assert req.ignore_result is options.get("ignore_result", False)
    assert req.stamps == options.get("stamps", {})
    assert req.reply_to == options.get("reply_to", "")
    assert req.delivery_info["priority"] == options.get("priority")
    for field in ("eta", "expires"):
        value = options.get(field)
        got = getattr(req, field)
        if value is None:
            assert got is None
        else:
            if isinstance(value, str):
                value = datetime.fromisoformat(value)
            elif value.tzinfo is None:
                value = value.replace(tzinfo=timezone.utc)
            assert got == value
    embed = req._payload[2]
    for field in ("callbacks", "errbacks", "chain", "chord"):
        assert embed[field] == options.get(field)
    assert req.request_dict.get("custom") == options.get("headers", {}).get("custom")

    # and our own decoder reads it back the way Celery does
    msg = mod.MessageDecoder(our_loads).decode(
        out.headers, out.properties, out.body, {"exchange": "", "routing_key": "celery"}, 1
    )
    assert_same_view(msg, req)


# -- (c) same call, same headers -------------------------------------------------------------


@pytest.mark.parametrize("serializer", SERIALIZERS)
def test_headers_and_properties_equal_celerys(app: Celery, serializer: str) -> None:
    task_id = str(uuid.uuid4())
    eta = NOW + timedelta(minutes=1)
    expires = NOW + timedelta(hours=1)
    common: dict[str, Any] = {
        "eta": eta,
        "expires": expires,
        "time_limit": 10,
        "soft_time_limit": 5,
        "group_id": "g",
        "group_index": 1,
        "root_id": "r",
        "parent_id": "p",
        "shadow": "s",
        "retries": 3,
        "ignore_result": True,
        "priority": 4,
        "reply_to": REPLY_TO,
        "headers": {"custom": 1.5},
        "compression": "zlib",
    }
    wire = celery_publish(
        app, serializer=serializer, task_id=task_id, stamped_headers=["st"], st="v", **common
    )
    # Celery's client builds `origin` itself; ours takes it as a parameter.
    ours = build_task_message(
        "proj.tasks.add",
        task_id,
        (2,),
        {"y": 3},
        serializer=serializer,
        origin=wire.headers["origin"],
        stamped_headers=["st"],
        stamps={"st": "v"},
        now=datetime.now(timezone.utc),
        **common,
    )
    assert list(ours.headers) == list(wire.headers)
    assert ours.headers == wire.headers
    for key in (
        "content_type",
        "content_encoding",
        "correlation_id",
        "reply_to",
        "delivery_mode",
        "priority",
    ):
        assert ours.properties[key] == wire.properties[key], key
    # expiration is measured from each client's own clock
    assert abs(int(ours.properties["expiration"]) - int(wire.properties["expiration"])) < 2000
    ctype, cenc = wire.properties["content_type"], wire.properties["content_encoding"]
    assert our_loads(ours.body, ctype, cenc, ours.headers["compression"]) == our_loads(
        wire.body, ctype, cenc, wire.headers["compression"]
    )


def test_celery_as_task_v2_key_order(app: Celery) -> None:
    task_id = str(uuid.uuid4())
    celery_headers = app.amqp.as_task_v2(task_id, "proj.tasks.add", (1,), {}, origin=ORIGIN).headers
    ours = build_task_message("proj.tasks.add", task_id, (1,), {}, origin=ORIGIN)
    assert list(ours.headers) == list(celery_headers)
    assert ours.headers == celery_headers
