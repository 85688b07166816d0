"""kombu's JSON envelope of a message on Redis: what a list element and an ``unacked`` entry hold.

A list element is ``{"body", "content-encoding", "content-type", "headers", "properties"}``
with the body base64-encoded (``properties.body_encoding``), a fresh UUID4
``properties.delivery_tag`` and ``properties.delivery_info`` = the exchange and routing key it
was published with. An ``unacked`` hash value is ``[envelope, exchange, routing_key]``.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from bisect import bisect
from collections.abc import Mapping
from typing import Any

from celeriac.errors import ProtocolError
from celeriac.jsoncodec import json_dumps, json_loads

__all__ = [
    "INTERNAL_PROPERTIES",
    "Envelope",
    "body_of",
    "dumps",
    "loads",
    "make_envelope",
    "mark_redelivered",
    "priority_of",
    "step_for",
]

Envelope = dict[str, Any]

#: envelope properties that belong to the transport, not to the message
INTERNAL_PROPERTIES = frozenset({"delivery_info", "body_encoding", "delivery_tag"})
_MAX_PRIORITY = 9


def make_envelope(
    body: bytes,
    exchange: str,
    routing_key: str,
    headers: Mapping[str, Any] | None,
    properties: Mapping[str, Any] | None,
    body_encoding: str,
) -> Envelope:
    """The envelope kombu's ``basic_publish`` would write for this message."""
    props = dict(properties or ())
    content_type = props.pop("content_type", None)
    content_encoding = props.pop("content_encoding", None)
    priority = props.pop("priority", None)
    for name in INTERNAL_PROPERTIES:
        props.pop(name, None)
    props["delivery_info"] = {"exchange": exchange, "routing_key": routing_key}
    props["priority"] = priority or 0
    if body_encoding == "base64":
        text: str = base64.b64encode(body).decode("ascii")
        props["body_encoding"] = "base64"
    else:
        text = body.decode("utf-8")
        props["body_encoding"] = body_encoding
    props["delivery_tag"] = str(uuid.uuid4())
    return {
        "body": text,
        "content-encoding": content_encoding,
        "content-type": content_type,
        "headers": dict(headers) if headers else {},
        "properties": props,
    }


def dumps(obj: Any) -> bytes:
    return json_dumps(obj)


def loads(data: bytes | str, what: str) -> Any:
    """Decode one envelope (or ``unacked`` entry); ``what`` says where it came from.

    Raises:
        ProtocolError: not JSON, or not a JSON object with ``properties``.
    """
    try:
        obj = json_loads(data)
    except Exception as exc:
        raise ProtocolError(f"cannot decode the message from {what}: {exc}") from exc
    if isinstance(obj, dict) and not isinstance(obj.get("properties"), dict):
        raise ProtocolError(f"cannot decode the message from {what}: no properties object")
    return obj


def body_of(envelope: Envelope, what: str) -> bytes:
    """The body bytes: base64-decoded when ``body_encoding`` says so, else UTF-8 text.

    Raises:
        ProtocolError: the body is not valid base64.
    """
    body = envelope.get("body")
    if not body:
        return b""
    encoding = envelope["properties"].get("body_encoding")
    if isinstance(body, str):
        if encoding and encoding.lower() == "base64":
            try:
                return base64.b64decode(body)
            except (binascii.Error, ValueError) as exc:
                raise ProtocolError(f"cannot decode the body of {what}: {exc}") from None
        return body.encode("utf-8")
    if isinstance(body, bytes):
        return body
    raise ProtocolError(f"cannot decode the body of {what}: a {type(body).__name__}, not text")


def priority_of(envelope: Envelope) -> int:
    """kombu's ``_get_message_priority``: the priority clamped to 0-9, 0 when unreadable."""
    try:
        value = int(envelope["properties"]["priority"])
    except (TypeError, ValueError, KeyError):
        return 0
    return max(0, min(value, _MAX_PRIORITY))


def step_for(priority: int, steps: tuple[int, ...]) -> int:
    """The priority step a message of ``priority`` goes to: the highest step not above it."""
    return steps[bisect(steps, priority) - 1]


def mark_redelivered(envelope: Envelope) -> None:
    """Set the flags kombu sets on a message it puts back (``_do_restore_message``)."""
    try:
        envelope["headers"]["redelivered"] = True
        envelope["properties"]["delivery_info"]["redelivered"] = True
    except (KeyError, TypeError):
        pass
