"""Decode Celery task messages (protocol v2, v1 and hybrid) into :class:`TaskMessage`.

Pure twin of ``_speedups/message.pyx``: same names, same behaviour, same exceptions and
messages. Keep the two in step; ``tests/unit/test_message_agreement.py`` checks they agree.

The headers are read when the message arrives; the body (args, kwargs, embed) is decoded only
when :meth:`TaskMessage.decode_body` is first called, usually in the process that runs the
task.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timezone, tzinfo
from typing import Any, Final, NoReturn, cast

from celeriac.errors import InvalidTaskError, MessageTooLarge, UnknownMessageError

__all__ = ["TASK_MESSAGE_FIELDS", "Loads", "MessageDecoder", "TaskMessage"]

Loads = Callable[[bytes, str | None, str | None, str | None], Any]
"""``loads(body, content_type, content_encoding, compression) -> decoded object``."""

TASK_MESSAGE_FIELDS: Final = (
    "protocol",
    "id",
    "name",
    "shadow",
    "lang",
    "eta",
    "expires",
    "eta_at",
    "expires_at",
    "group",
    "group_index",
    "retries",
    "time_limit",
    "soft_time_limit",
    "root_id",
    "parent_id",
    "argsrepr",
    "kwargsrepr",
    "origin",
    "ignore_result",
    "replaced_task_nesting",
    "stamped_headers",
    "stamps",
    "headers",
    "correlation_id",
    "reply_to",
    "priority",
    "content_type",
    "content_encoding",
    "compression",
    "body",
    "delivery_info",
    "delivery_tag",
)
"""Every public data attribute of :class:`TaskMessage`, in declaration order."""

_UTC: Final = timezone.utc
_MISSING: Final = object()

# Header keys a hybrid (v1 body, v2 headers) message may carry in its body instead; when the
# headers lack any of them the body has to be decoded up front to fill them in.
_HYBRID_KEYS: Final = (
    "lang",
    "id",
    "root_id",
    "parent_id",
    "group",
    "shadow",
    "eta",
    "expires",
    "retries",
    "timelimit",
    "argsrepr",
    "kwargsrepr",
    "origin",
)


class TaskMessage:
    """One decoded task message.

    Attributes are the header fields as received (``eta``/``expires`` as ISO strings), their
    parsed forms (``eta_at``/``expires_at`` as POSIX timestamps), the AMQP properties that
    matter to a worker, and the raw ``body``, decoded on demand by :meth:`decode_body`.
    ``headers`` is the headers mapping itself, not a copy (a merged dict for hybrid messages).
    """

    __slots__ = (
        *TASK_MESSAGE_FIELDS,
        "_loads",
        "_parts",
        "_raw",
    )

    protocol: int
    id: str
    name: str
    shadow: str | None
    lang: str
    eta: str | None
    expires: str | None
    eta_at: float | None
    expires_at: float | None
    group: str | None
    group_index: int | None
    retries: int
    time_limit: float | None
    soft_time_limit: float | None
    root_id: str | None
    parent_id: str | None
    argsrepr: str | None
    kwargsrepr: str | None
    origin: str | None
    ignore_result: bool
    replaced_task_nesting: int
    stamped_headers: list[str] | None
    stamps: dict[str, Any]
    headers: dict[str, Any]
    correlation_id: str | None
    reply_to: str | None
    priority: int | None
    content_type: str | None
    content_encoding: str | None
    compression: str | None
    body: bytes
    delivery_info: dict[str, Any]
    delivery_tag: Any
    _loads: Loads | None
    _parts: tuple[list[Any], dict[str, Any], dict[str, Any]] | None
    _raw: Any

    def decode_body(self) -> tuple[list[Any], dict[str, Any], dict[str, Any]]:
        """Return ``(args, kwargs, embed)``, decoding the body on the first call.

        Raises:
            DecodeError, ContentDisallowed: from the ``loads`` callable (nothing is cached,
                so a later call tries again).
            InvalidTaskError: the body is not ``[args, kwargs, embed]`` of the right types.
        """
        parts = self._parts
        if parts is None:
            # decode() leaves the body it had to decode already (v1, or headers too thin to
            # rule out a hybrid) in _raw; None there means "not decoded yet".
            raw = self._raw
            if raw is None:
                assert self._loads is not None
                raw = self._loads(
                    self.body, self.content_type, self.content_encoding, self.compression
                )
            if type(raw) is dict and (self.protocol == 1 or "args" in raw):
                parts = _split_fields(self.id, raw)
            else:
                parts = _split_list(self.id, raw)
            self._parts = parts
            self._raw = None
        return parts

    @property
    def args(self) -> list[Any]:
        """Positional arguments (decodes the body on first use)."""
        return self.decode_body()[0]

    @property
    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments (decodes the body on first use)."""
        return self.decode_body()[1]

    @property
    def embed(self) -> dict[str, Any]:
        """The embed mapping: callbacks, errbacks, chain, chord (decodes the body)."""
        return self.decode_body()[2]

    @property
    def callbacks(self) -> Any:
        """Signatures to call on success (``link``), or ``None``."""
        return self.decode_body()[2].get("callbacks")

    @property
    def errbacks(self) -> Any:
        """Signatures to call on failure (``link_error``), or ``None``."""
        return self.decode_body()[2].get("errbacks")

    @property
    def chain(self) -> Any:
        """The rest of the chain, last task first, or ``None``."""
        return self.decode_body()[2].get("chain")

    @property
    def chord(self) -> Any:
        """The chord body this task is a header of, or ``None``."""
        return self.decode_body()[2].get("chord")

    def __repr__(self) -> str:
        return f"<TaskMessage {self.name}[{self.id}] v{self.protocol}>"


class MessageDecoder:
    """Turns broker deliveries into :class:`TaskMessage` objects.

    Args:
        loads: ``loads(body, content_type, content_encoding, compression)``; decodes a body
            and raises ``DecodeError`` or ``ContentDisallowed`` itself. Bound once here.
        tz: the zone of naive ``eta``/``expires`` values (v1 messages with ``utc=True`` are
            always UTC).
        max_body_size: bodies longer than this many bytes raise ``MessageTooLarge``.
    """

    __slots__ = ("_loads", "_max_body_size", "_tz")

    def __init__(
        self,
        loads: Loads,
        tz: tzinfo = _UTC,
        max_body_size: int | None = None,
    ) -> None:
        if not callable(loads):
            raise TypeError(f"loads must be callable, not {type(loads).__name__}")
        if max_body_size is not None:
            if type(max_body_size) is not int:
                raise TypeError(f"max_body_size must be an int, not {type(max_body_size).__name__}")
            if max_body_size < 0:
                raise ValueError(f"max_body_size must be >= 0, not {max_body_size}")
        self._loads = loads
        self._tz = tz
        self._max_body_size = max_body_size

    @property
    def tz(self) -> tzinfo:
        """The zone of naive ``eta``/``expires`` values."""
        return self._tz

    @property
    def max_body_size(self) -> int | None:
        """The largest body accepted, in bytes, or ``None`` for no limit."""
        return self._max_body_size

    def decode(
        self,
        headers: dict[str, Any] | None,
        properties: dict[str, Any],
        body: bytes,
        delivery_info: dict[str, Any],
        delivery_tag: Any,
    ) -> TaskMessage:
        """Decode the headers of one delivery; the body stays encoded until needed.

        Raises:
            UnknownMessageError: not a task message (headers not a mapping, or no ``task``
                header and a body that is not a v1 task dict).
            InvalidTaskError: a field has the wrong type or an unparsable date.
            MessageTooLarge: the body is over ``max_body_size``.
            DecodeError, ContentDisallowed: from ``loads``, for v1 messages (whose body must
                be decoded to be read at all) and for v2 headers too incomplete to rule out a
                hybrid message.
        """
        if type(properties) is not dict:
            properties = dict(properties)
        if headers is None:
            headers = {}
        elif type(headers) is not dict:
            if not isinstance(headers, Mapping):
                raise UnknownMessageError(
                    f"cannot decode task message {_label(properties.get('correlation_id'))}: "
                    f"headers are not a mapping: {_vrepr(headers)}"
                )
            headers = dict(headers)
        max_body_size = self._max_body_size
        if max_body_size is not None and len(body) > max_body_size:
            task_id = headers.get("id")
            if task_id is None:
                task_id = properties.get("correlation_id")
            raise MessageTooLarge(
                f"cannot decode task message {_label(task_id)}: body is {len(body)} bytes, "
                f"over the limit of {max_body_size}"
            )
        correlation_id = properties.get("correlation_id")
        content_type = properties.get("content_type")
        content_encoding = properties.get("content_encoding")
        compression = headers.get("compression")
        msg = TaskMessage()
        msg.headers = headers
        msg.correlation_id = correlation_id
        msg.reply_to = properties.get("reply_to")
        priority = properties.get("priority")
        msg.priority = delivery_info.get("priority") if priority is None else priority
        msg.content_type = content_type
        msg.content_encoding = content_encoding
        msg.compression = compression
        msg.body = body
        msg.delivery_info = delivery_info
        msg.delivery_tag = delivery_tag
        msg._parts = None
        msg._raw = None
        msg._loads = self._loads

        if "task" in headers:
            msg.protocol = 2
            if _fill(msg, headers, correlation_id, self._tz):
                raw = self._loads(body, content_type, content_encoding, compression)
                if type(raw) is dict and "args" in raw:
                    merged = _hybrid_headers(raw)
                    merged.update(headers)
                    msg.headers = merged
                    tz = _UTC if raw.get("utc", True) else self._tz
                    _fill(msg, merged, correlation_id, tz)
                msg._raw = raw
            if msg.id is None:
                raise InvalidTaskError(
                    f"cannot decode task message {_label(None)}: no id header "
                    f"and no correlation_id (task {_vrepr(msg.name)})"
                )
            return msg

        raw = self._loads(body, content_type, content_encoding, compression)
        if type(raw) is not dict or "task" not in raw:
            raise UnknownMessageError(
                f"cannot decode task message {_label(correlation_id)}: not a task message "
                f"(no 'task' header, and the body is not a v1 task dict: {_vrepr(raw)})"
            )
        msg.protocol = 1
        tz = _UTC if raw.get("utc", True) else self._tz
        _fill(msg, raw, correlation_id, tz)
        if msg.id is None:
            raise InvalidTaskError(
                f"cannot decode task message {_label(None)}: no id in the v1 body "
                f"and no correlation_id (task {_vrepr(msg.name)})"
            )
        taskset = raw.get("taskset")
        if taskset is not None:
            msg.group = _opt_str(msg.id, "taskset", taskset)
        msg._raw = raw
        # Validate the v1 body now: it is decoded already, and a bad one is a bad message.
        msg.decode_body()
        return msg


def _fill(msg: TaskMessage, h: dict[str, Any], correlation_id: Any, tz: tzinfo) -> bool:
    """Set the header fields of ``msg`` from ``h``; True if a hybrid key was missing.

    A missing id is left as ``None`` for the caller to report: the body of a hybrid message
    may still supply it.
    """
    missing = False
    task_id = h.get("id", _MISSING)
    if task_id is _MISSING:
        missing = True
        task_id = None
    if task_id is None:
        task_id = correlation_id
    if task_id is not None and type(task_id) is not str:
        raise InvalidTaskError(
            f"cannot decode task message {_label(None)}: id is not a string: {_vrepr(task_id)}"
        )
    # None only until the caller reports it: a hybrid body may still supply the id.
    msg.id = cast(str, task_id)

    name = h.get("task")
    if type(name) is not str:
        raise InvalidTaskError(
            f"cannot decode task message {_label(task_id)}: task name is not a string: "
            f"{_vrepr(name)}"
        )
    msg.name = name

    value = h.get("lang", _MISSING)
    if value is _MISSING:
        missing = True
        value = None
    msg.lang = "py" if value is None else _str(task_id, "lang", value)

    value = h.get("shadow", _MISSING)
    if value is _MISSING:
        missing = True
        value = None
    msg.shadow = _opt_str(task_id, "shadow", value)

    value = h.get("eta", _MISSING)
    if value is _MISSING:
        missing = True
        value = None
    if value is None:
        msg.eta = msg.eta_at = None
    else:
        msg.eta, msg.eta_at = _parse_time(task_id, "eta", value, tz)

    value = h.get("expires", _MISSING)
    if value is _MISSING:
        missing = True
        value = None
    if value is None:
        msg.expires = msg.expires_at = None
    else:
        msg.expires, msg.expires_at = _parse_time(task_id, "expires", value, tz)

    value = h.get("group", _MISSING)
    if value is _MISSING:
        missing = True
        value = None
    msg.group = _opt_str(task_id, "group", value)

    value = h.get("group_index")
    if value is not None and type(value) is not int:
        raise InvalidTaskError(
            f"cannot decode task message {_label(task_id)}: group_index is not an int: "
            f"{_vrepr(value)}"
        )
    msg.group_index = value

    value = h.get("retries", _MISSING)
    if value is _MISSING:
        missing = True
        value = None
    if value is None:
        value = 0
    elif type(value) is not int:
        raise InvalidTaskError(
            f"cannot decode task message {_label(task_id)}: retries is not an int: {_vrepr(value)}"
        )
    msg.retries = value

    value = h.get("timelimit", _MISSING)
    if value is _MISSING:
        missing = True
        value = None
    if value is None:
        msg.time_limit = msg.soft_time_limit = None
    else:
        if (type(value) is not list and type(value) is not tuple) or len(value) != 2:
            _bad_timelimit(task_id, value)
        msg.time_limit = _seconds(task_id, value, value[0])
        msg.soft_time_limit = _seconds(task_id, value, value[1])

    value = h.get("root_id", _MISSING)
    if value is _MISSING:
        missing = True
        value = None
    msg.root_id = _opt_str(task_id, "root_id", value)

    value = h.get("parent_id", _MISSING)
    if value is _MISSING:
        missing = True
        value = None
    msg.parent_id = _opt_str(task_id, "parent_id", value)

    value = h.get("argsrepr", _MISSING)
    if value is _MISSING:
        missing = True
        value = None
    msg.argsrepr = _opt_str(task_id, "argsrepr", value)

    value = h.get("kwargsrepr", _MISSING)
    if value is _MISSING:
        missing = True
        value = None
    msg.kwargsrepr = _opt_str(task_id, "kwargsrepr", value)

    value = h.get("origin", _MISSING)
    if value is _MISSING:
        missing = True
        value = None
    msg.origin = _opt_str(task_id, "origin", value)

    value = h.get("ignore_result")
    if value is None:
        value = False
    elif type(value) is not bool:
        raise InvalidTaskError(
            f"cannot decode task message {_label(task_id)}: ignore_result is not a bool: "
            f"{_vrepr(value)}"
        )
    msg.ignore_result = value

    value = h.get("replaced_task_nesting")
    if value is None:
        value = 0
    elif type(value) is not int:
        raise InvalidTaskError(
            f"cannot decode task message {_label(task_id)}: replaced_task_nesting is not an "
            f"int: {_vrepr(value)}"
        )
    msg.replaced_task_nesting = value

    value = h.get("stamped_headers")
    if value is not None:
        if type(value) is not list:
            if type(value) is not tuple:
                _bad_stamped_headers(task_id, value)
            value = list(value)
        for item in value:
            if type(item) is not str:
                _bad_stamped_headers(task_id, value)
    msg.stamped_headers = value

    value = h.get("stamps")
    if value is None:
        value = {}
    elif type(value) is not dict:
        if not isinstance(value, Mapping):
            raise InvalidTaskError(
                f"cannot decode task message {_label(task_id)}: stamps is not a mapping: "
                f"{_vrepr(value)}"
            )
        value = dict(value)
    msg.stamps = value
    return missing


def _hybrid_headers(raw: dict[str, Any]) -> dict[str, Any]:
    """The header fields a hybrid message's body supplies (Celery's ``hybrid_to_proto2``)."""
    get = raw.get
    return {
        "lang": get("lang"),
        "task": get("task"),
        "id": get("id"),
        "root_id": get("root_id"),
        "parent_id": get("parent_id"),
        "group": get("group"),
        "meth": get("meth"),
        "shadow": get("shadow"),
        "eta": get("eta"),
        "expires": get("expires"),
        "retries": get("retries", 0),
        "timelimit": get("timelimit", (None, None)),
        "argsrepr": get("argsrepr"),
        "kwargsrepr": get("kwargsrepr"),
        "origin": get("origin"),
    }


def _split_fields(
    task_id: str, raw: dict[str, Any]
) -> tuple[list[Any], dict[str, Any], dict[str, Any]]:
    """``(args, kwargs, embed)`` from a v1 or hybrid body: a dict of named fields.

    v1 has no ``chain`` (v1 chains nest in ``callbacks``).
    """
    args = raw.get("args")
    kwargs = raw.get("kwargs")
    embed = {
        "callbacks": raw.get("callbacks"),
        "errbacks": raw.get("errbacks"),
        "chain": None,
        "chord": raw.get("chord"),
    }
    return _check_parts(
        task_id, [] if args is None else args, {} if kwargs is None else kwargs, embed
    )


def _split_list(task_id: str, raw: Any) -> tuple[list[Any], dict[str, Any], dict[str, Any]]:
    """``(args, kwargs, embed)`` from a v2 body: ``[args, kwargs, embed]``."""
    if (type(raw) is not list and type(raw) is not tuple) or len(raw) != 3:
        raise InvalidTaskError(
            f"cannot decode task message {_label(task_id)}: body is not a 3-item list: "
            f"{_vrepr(raw)}"
        )
    return _check_parts(task_id, raw[0], raw[1], raw[2])


def _check_parts(
    task_id: str, args: Any, kwargs: Any, embed: Any
) -> tuple[list[Any], dict[str, Any], dict[str, Any]]:
    if type(args) is not list:
        if type(args) is not tuple:
            raise InvalidTaskError(
                f"cannot decode task message {_label(task_id)}: args is not a list: {_vrepr(args)}"
            )
        args = list(args)
    if type(kwargs) is not dict:
        if not isinstance(kwargs, Mapping):
            raise InvalidTaskError(
                f"cannot decode task message {_label(task_id)}: kwargs is not a mapping: "
                f"{_vrepr(kwargs)}"
            )
        kwargs = dict(kwargs)
    if embed is None:
        embed = {}
    elif type(embed) is not dict:
        if not isinstance(embed, Mapping):
            raise InvalidTaskError(
                f"cannot decode task message {_label(task_id)}: embed is not a mapping: "
                f"{_vrepr(embed)}"
            )
        embed = dict(embed)
    return args, kwargs, embed


def _parse_time(task_id: str | None, field: str, value: Any, tz: tzinfo) -> tuple[str, float]:
    """Return ``(iso_text, posix_timestamp)`` for an ``eta``/``expires`` value."""
    try:
        if type(value) is str:
            text = value
            # datetime.fromisoformat() reads a 'Z' suffix only from Python 3.11 on.
            dt = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] == "Z" else text)
        elif isinstance(value, datetime):
            # AMQP timestamps and pickled v1 bodies carry datetimes, not strings.
            dt = value
            text = value.isoformat()
        else:
            raise TypeError
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=tz)
        return text, dt.timestamp()
    except (TypeError, ValueError, OverflowError, OSError):
        raise InvalidTaskError(
            f"cannot decode task message {_label(task_id)}: invalid {field} value {_vrepr(value)}"
        ) from None


def _seconds(task_id: str | None, timelimit: Any, value: Any) -> float | None:
    if value is None:
        return None
    kind = type(value)
    if kind is float:
        return value  # type: ignore[no-any-return]
    if kind is int:
        return float(value)
    _bad_timelimit(task_id, timelimit)


def _bad_timelimit(task_id: str | None, value: Any) -> NoReturn:
    raise InvalidTaskError(
        f"cannot decode task message {_label(task_id)}: timelimit is not a [hard, soft] "
        f"pair of numbers: {_vrepr(value)}"
    )


def _bad_stamped_headers(task_id: str | None, value: Any) -> NoReturn:
    raise InvalidTaskError(
        f"cannot decode task message {_label(task_id)}: stamped_headers is not a list of "
        f"strings: {_vrepr(value)}"
    )


def _str(task_id: str | None, field: str, value: Any) -> str:
    if type(value) is str:
        return value
    _bad_str(task_id, field, value)


def _opt_str(task_id: str | None, field: str, value: Any) -> str | None:
    if value is None or type(value) is str:
        return value
    _bad_str(task_id, field, value)


def _bad_str(task_id: str | None, field: str, value: Any) -> NoReturn:
    raise InvalidTaskError(
        f"cannot decode task message {_label(task_id)}: {field} is not a string: {_vrepr(value)}"
    )


def _label(task_id: Any) -> str:
    """The task id as error messages show it: bounded, or a placeholder."""
    if type(task_id) is not str or not task_id:
        return "<no id>"
    if len(task_id) > 40:
        return task_id[:40] + "…"
    return task_id


def _vrepr(value: Any) -> str:
    """A bounded repr of a bad value for an error message; never raises."""
    try:
        text = repr(value)
    except Exception:
        text = f"<unrepresentable {type(value).__name__}>"
    if len(text) > 100:
        text = text[:99] + "…"
    return text
