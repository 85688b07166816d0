# cython: language_level=3
"""Decode Celery task messages (protocol v2, v1 and hybrid) into :class:`TaskMessage`.

Compiled twin of ``celeriac/_speedups_py/message.py``, which is the reference and the type
source: same names, same behaviour, same exceptions and messages. Keep the two in step;
``tests/unit/test_message_agreement.py`` checks they agree.

Header keys are written as string literals: Cython interns them once as module constants, so
each lookup is a ``PyDict_GetItem`` with a cached hash. Never log from here.
"""

cimport cython
from cpython.dict cimport PyDict_GetItem
from cpython.ref cimport PyObject

cdef extern from "Python.h":
    const Py_ssize_t PY_SSIZE_T_MAX

from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any

from celeriac.errors import InvalidTaskError, MessageTooLarge, UnknownMessageError

__all__ = ["TASK_MESSAGE_FIELDS", "Loads", "MessageDecoder", "TaskMessage"]

Loads = Callable[[bytes, str | None, str | None, str | None], Any]

TASK_MESSAGE_FIELDS = (
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

cdef object _UTC = timezone.utc
cdef object _MISSING = object()
cdef object _fromisoformat = datetime.fromisoformat
cdef object _Mapping = Mapping
cdef object _datetime = datetime


cdef inline object _get(dict d, str key):
    """``d.get(key, _MISSING)`` without a method call."""
    cdef PyObject* value = PyDict_GetItem(d, key)
    if value is NULL:
        return _MISSING
    return <object>value


cdef inline object _get_none(dict d, str key):
    cdef PyObject* value = PyDict_GetItem(d, key)
    if value is NULL:
        return None
    return <object>value


@cython.final
@cython.freelist(256)
cdef class TaskMessage:
    """One decoded task message.

    Attributes are the header fields as received (``eta``/``expires`` as ISO strings), their
    parsed forms (``eta_at``/``expires_at`` as POSIX timestamps), the AMQP properties that
    matter to a worker, and the raw ``body``, decoded on demand by :meth:`decode_body`.
    ``headers`` is the headers mapping itself, not a copy (a merged dict for hybrid messages).
    """

    cdef public object protocol
    cdef public object id
    cdef public object name
    cdef public object shadow
    cdef public object lang
    cdef public object eta
    cdef public object expires
    cdef public object eta_at
    cdef public object expires_at
    cdef public object group
    cdef public object group_index
    cdef public object retries
    cdef public object time_limit
    cdef public object soft_time_limit
    cdef public object root_id
    cdef public object parent_id
    cdef public object argsrepr
    cdef public object kwargsrepr
    cdef public object origin
    cdef public object ignore_result
    cdef public object replaced_task_nesting
    cdef public object stamped_headers
    cdef public object stamps
    cdef public object headers
    cdef public object correlation_id
    cdef public object reply_to
    cdef public object priority
    cdef public object content_type
    cdef public object content_encoding
    cdef public object compression
    cdef public object body
    cdef public object delivery_info
    cdef public object delivery_tag
    cdef object _loads
    cdef tuple _parts
    cdef object _raw

    def decode_body(self):
        """Return ``(args, kwargs, embed)``, decoding the body on the first call.

        Raises:
            DecodeError, ContentDisallowed: from the ``loads`` callable (nothing is cached,
                so a later call tries again).
            InvalidTaskError: the body is not ``[args, kwargs, embed]`` of the right types.
        """
        cdef tuple parts = self._parts
        cdef object raw
        if parts is None:
            # decode() leaves the body it had to decode already (v1, or headers too thin to
            # rule out a hybrid) in _raw; None there means "not decoded yet".
            raw = self._raw
            if raw is None:
                assert self._loads is not None
                raw = self._loads(
                    self.body, self.content_type, self.content_encoding, self.compression
                )
            if type(raw) is dict and (self.protocol == 1 or "args" in <dict>raw):
                parts = _split_fields(self.id, <dict>raw)
            else:
                parts = _split_list(self.id, raw)
            self._parts = parts
            self._raw = None
        return parts

    @property
    def args(self):
        """Positional arguments (decodes the body on first use)."""
        return self.decode_body()[0]

    @property
    def kwargs(self):
        """Keyword arguments (decodes the body on first use)."""
        return self.decode_body()[1]

    @property
    def embed(self):
        """The embed mapping: callbacks, errbacks, chain, chord (decodes the body)."""
        return self.decode_body()[2]

    @property
    def callbacks(self):
        """Signatures to call on success (``link``), or ``None``."""
        return self.decode_body()[2].get("callbacks")

    @property
    def errbacks(self):
        """Signatures to call on failure (``link_error``), or ``None``."""
        return self.decode_body()[2].get("errbacks")

    @property
    def chain(self):
        """The rest of the chain, last task first, or ``None``."""
        return self.decode_body()[2].get("chain")

    @property
    def chord(self):
        """The chord body this task is a header of, or ``None``."""
        return self.decode_body()[2].get("chord")

    def __repr__(self):
        return f"<TaskMessage {self.name}[{self.id}] v{self.protocol}>"


@cython.final
cdef class MessageDecoder:
    """Turns broker deliveries into :class:`TaskMessage` objects.

    Args:
        loads: ``loads(body, content_type, content_encoding, compression)``; decodes a body
            and raises ``DecodeError`` or ``ContentDisallowed`` itself. Bound once here.
        tz: the zone of naive ``eta``/``expires`` values (v1 messages with ``utc=True`` are
            always UTC).
        max_body_size: bodies longer than this many bytes raise ``MessageTooLarge``.
    """

    cdef object _loads
    cdef readonly object tz
    cdef readonly object max_body_size
    cdef Py_ssize_t _max

    def __init__(self, loads, tz=_UTC, max_body_size=None):
        if not callable(loads):
            raise TypeError(f"loads must be callable, not {type(loads).__name__}")
        if max_body_size is not None:
            if type(max_body_size) is not int:
                raise TypeError(
                    f"max_body_size must be an int, not {type(max_body_size).__name__}"
                )
            if max_body_size < 0:
                raise ValueError(f"max_body_size must be >= 0, not {max_body_size}")
        self._loads = loads
        self.tz = tz
        self.max_body_size = max_body_size
        # No body can be longer than PY_SSIZE_T_MAX, so clamping a huge limit changes nothing.
        self._max = -1 if max_body_size is None else min(max_body_size, PY_SSIZE_T_MAX)

    def decode(self, headers, properties, body, delivery_info, delivery_tag):
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
        cdef dict h
        cdef dict props
        cdef dict merged
        cdef TaskMessage msg
        cdef object raw, task_id, correlation_id, content_type, content_encoding, compression
        cdef object priority, tz, taskset

        if type(properties) is dict:
            props = <dict>properties
        else:
            props = dict(properties)
        if headers is None:
            h = {}
        elif type(headers) is dict:
            h = <dict>headers
        else:
            if not isinstance(headers, _Mapping):
                raise UnknownMessageError(
                    f"cannot decode task message {_label(_get_none(props, 'correlation_id'))}: "
                    f"headers are not a mapping: {_vrepr(headers)}"
                )
            h = dict(headers)
        if self._max >= 0 and len(body) > self._max:
            task_id = _get_none(h, "id")
            if task_id is None:
                task_id = _get_none(props, "correlation_id")
            raise MessageTooLarge(
                f"cannot decode task message {_label(task_id)}: body is {len(body)} bytes, "
                f"over the limit of {self.max_body_size}"
            )
        correlation_id = _get_none(props, "correlation_id")
        content_type = _get_none(props, "content_type")
        content_encoding = _get_none(props, "content_encoding")
        compression = _get_none(h, "compression")
        msg = TaskMessage.__new__(TaskMessage)
        msg.headers = h
        msg.correlation_id = correlation_id
        msg.reply_to = _get_none(props, "reply_to")
        priority = _get_none(props, "priority")
        if priority is None:
            if type(delivery_info) is dict:
                priority = _get_none(<dict>delivery_info, "priority")
            else:
                priority = delivery_info.get("priority")
        msg.priority = priority
        msg.content_type = content_type
        msg.content_encoding = content_encoding
        msg.compression = compression
        msg.body = body
        msg.delivery_info = delivery_info
        msg.delivery_tag = delivery_tag
        msg._parts = None
        msg._raw = None
        msg._loads = self._loads

        if PyDict_GetItem(h, "task") is not NULL:
            msg.protocol = 2
            if _fill(msg, h, correlation_id, self.tz):
                raw = self._loads(body, content_type, content_encoding, compression)
                if type(raw) is dict and "args" in <dict>raw:
                    merged = _hybrid_headers(<dict>raw)
                    merged.update(h)
                    msg.headers = merged
                    tz = _UTC if raw.get("utc", True) else self.tz
                    _fill(msg, merged, correlation_id, tz)
                msg._raw = raw
            if msg.id is None:
                raise InvalidTaskError(
                    f"cannot decode task message {_label(None)}: no id header "
                    f"and no correlation_id (task {_vrepr(msg.name)})"
                )
            return msg

        raw = self._loads(body, content_type, content_encoding, compression)
        if type(raw) is not dict or "task" not in <dict>raw:
            raise UnknownMessageError(
                f"cannot decode task message {_label(correlation_id)}: not a task message "
                f"(no 'task' header, and the body is not a v1 task dict: {_vrepr(raw)})"
            )
        msg.protocol = 1
        tz = _UTC if raw.get("utc", True) else self.tz
        _fill(msg, <dict>raw, correlation_id, tz)
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


cdef bint _fill(TaskMessage msg, dict h, object correlation_id, object tz) except -1:
    """Set the header fields of ``msg`` from ``h``; True if a hybrid key was missing.

    A missing id is left as ``None`` for the caller to report: the body of a hybrid message
    may still supply it.
    """
    cdef bint missing = False
    cdef object task_id, name, value, item

    task_id = _get(h, "id")
    if task_id is _MISSING:
        missing = True
        task_id = None
    if task_id is None:
        task_id = correlation_id
    if task_id is not None and type(task_id) is not str:
        raise InvalidTaskError(
            f"cannot decode task message {_label(None)}: id is not a string: {_vrepr(task_id)}"
        )
    msg.id = task_id

    name = _get_none(h, "task")
    if type(name) is not str:
        raise InvalidTaskError(
            f"cannot decode task message {_label(task_id)}: task name is not a string: "
            f"{_vrepr(name)}"
        )
    msg.name = name

    value = _get(h, "lang")
    if value is _MISSING:
        missing = True
        value = None
    msg.lang = "py" if value is None else _opt_str(task_id, "lang", value)

    value = _get(h, "shadow")
    if value is _MISSING:
        missing = True
        value = None
    msg.shadow = _opt_str(task_id, "shadow", value)

    value = _get(h, "eta")
    if value is _MISSING:
        missing = True
        value = None
    if value is None:
        msg.eta = msg.eta_at = None
    else:
        msg.eta, msg.eta_at = _parse_time(task_id, "eta", value, tz)

    value = _get(h, "expires")
    if value is _MISSING:
        missing = True
        value = None
    if value is None:
        msg.expires = msg.expires_at = None
    else:
        msg.expires, msg.expires_at = _parse_time(task_id, "expires", value, tz)

    value = _get(h, "group")
    if value is _MISSING:
        missing = True
        value = None
    msg.group = _opt_str(task_id, "group", value)

    value = _get_none(h, "group_index")
    if value is not None and type(value) is not int:
        raise InvalidTaskError(
            f"cannot decode task message {_label(task_id)}: group_index is not an int: "
            f"{_vrepr(value)}"
        )
    msg.group_index = value

    value = _get(h, "retries")
    if value is _MISSING:
        missing = True
        value = None
    if value is None:
        value = 0
    elif type(value) is not int:
        raise InvalidTaskError(
            f"cannot decode task message {_label(task_id)}: retries is not an int: "
            f"{_vrepr(value)}"
        )
    msg.retries = value

    value = _get(h, "timelimit")
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

    value = _get(h, "root_id")
    if value is _MISSING:
        missing = True
        value = None
    msg.root_id = _opt_str(task_id, "root_id", value)

    value = _get(h, "parent_id")
    if value is _MISSING:
        missing = True
        value = None
    msg.parent_id = _opt_str(task_id, "parent_id", value)

    value = _get(h, "argsrepr")
    if value is _MISSING:
        missing = True
        value = None
    msg.argsrepr = _opt_str(task_id, "argsrepr", value)

    value = _get(h, "kwargsrepr")
    if value is _MISSING:
        missing = True
        value = None
    msg.kwargsrepr = _opt_str(task_id, "kwargsrepr", value)

    value = _get(h, "origin")
    if value is _MISSING:
        missing = True
        value = None
    msg.origin = _opt_str(task_id, "origin", value)

    value = _get_none(h, "ignore_result")
    if value is None:
        value = False
    elif type(value) is not bool:
        raise InvalidTaskError(
            f"cannot decode task message {_label(task_id)}: ignore_result is not a bool: "
            f"{_vrepr(value)}"
        )
    msg.ignore_result = value

    value = _get_none(h, "replaced_task_nesting")
    if value is None:
        value = 0
    elif type(value) is not int:
        raise InvalidTaskError(
            f"cannot decode task message {_label(task_id)}: replaced_task_nesting is not an "
            f"int: {_vrepr(value)}"
        )
    msg.replaced_task_nesting = value

    value = _get_none(h, "stamped_headers")
    if value is not None:
        if type(value) is not list:
            if type(value) is not tuple:
                _bad_stamped_headers(task_id, value)
            value = list(value)
        for item in <list>value:
            if type(item) is not str:
                _bad_stamped_headers(task_id, value)
    msg.stamped_headers = value

    value = _get_none(h, "stamps")
    if value is None:
        value = {}
    elif type(value) is not dict:
        if not isinstance(value, _Mapping):
            raise InvalidTaskError(
                f"cannot decode task message {_label(task_id)}: stamps is not a mapping: "
                f"{_vrepr(value)}"
            )
        value = dict(value)
    msg.stamps = value
    return missing


cdef dict _hybrid_headers(dict raw):
    """The header fields a hybrid message's body supplies (Celery's ``hybrid_to_proto2``)."""
    return {
        "lang": raw.get("lang"),
        "task": raw.get("task"),
        "id": raw.get("id"),
        "root_id": raw.get("root_id"),
        "parent_id": raw.get("parent_id"),
        "group": raw.get("group"),
        "meth": raw.get("meth"),
        "shadow": raw.get("shadow"),
        "eta": raw.get("eta"),
        "expires": raw.get("expires"),
        "retries": raw.get("retries", 0),
        "timelimit": raw.get("timelimit", (None, None)),
        "argsrepr": raw.get("argsrepr"),
        "kwargsrepr": raw.get("kwargsrepr"),
        "origin": raw.get("origin"),
    }


cdef tuple _split_fields(object task_id, dict raw):
    """``(args, kwargs, embed)`` from a v1 or hybrid body: a dict of named fields.

    v1 has no ``chain`` (v1 chains nest in ``callbacks``).
    """
    cdef object args = raw.get("args")
    cdef object kwargs = raw.get("kwargs")
    cdef dict embed = {
        "callbacks": raw.get("callbacks"),
        "errbacks": raw.get("errbacks"),
        "chain": None,
        "chord": raw.get("chord"),
    }
    return _check_parts(
        task_id, [] if args is None else args, {} if kwargs is None else kwargs, embed
    )


cdef tuple _split_list(object task_id, object raw):
    """``(args, kwargs, embed)`` from a v2 body: ``[args, kwargs, embed]``."""
    if (type(raw) is not list and type(raw) is not tuple) or len(raw) != 3:
        raise InvalidTaskError(
            f"cannot decode task message {_label(task_id)}: body is not a 3-item list: "
            f"{_vrepr(raw)}"
        )
    return _check_parts(task_id, raw[0], raw[1], raw[2])


cdef tuple _check_parts(object task_id, object args, object kwargs, object embed):
    if type(args) is not list:
        if type(args) is not tuple:
            raise InvalidTaskError(
                f"cannot decode task message {_label(task_id)}: args is not a list: "
                f"{_vrepr(args)}"
            )
        args = list(args)
    if type(kwargs) is not dict:
        if not isinstance(kwargs, _Mapping):
            raise InvalidTaskError(
                f"cannot decode task message {_label(task_id)}: kwargs is not a mapping: "
                f"{_vrepr(kwargs)}"
            )
        kwargs = dict(kwargs)
    if embed is None:
        embed = {}
    elif type(embed) is not dict:
        if not isinstance(embed, _Mapping):
            raise InvalidTaskError(
                f"cannot decode task message {_label(task_id)}: embed is not a mapping: "
                f"{_vrepr(embed)}"
            )
        embed = dict(embed)
    return (args, kwargs, embed)


cdef tuple _parse_time(object task_id, str field, object value, object tz):
    """Return ``(iso_text, posix_timestamp)`` for an ``eta``/``expires`` value."""
    cdef object text, dt
    try:
        if type(value) is str:
            text = value
            # datetime.fromisoformat() reads a 'Z' suffix only from Python 3.11 on.
            dt = _fromisoformat(
                (<str>text)[:len(<str>text) - 1] + "+00:00"
                if (<str>text).endswith("Z") else text
            )
        elif isinstance(value, _datetime):
            # AMQP timestamps and pickled v1 bodies carry datetimes, not strings.
            dt = value
            text = value.isoformat()
        else:
            raise TypeError
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=tz)
        return (text, dt.timestamp())
    except (TypeError, ValueError, OverflowError, OSError):
        pass
    raise InvalidTaskError(
        f"cannot decode task message {_label(task_id)}: invalid {field} value "
        f"{_vrepr(value)}"
    )


cdef object _seconds(object task_id, object timelimit, object value):
    if value is None:
        return None
    if type(value) is float:
        return value
    if type(value) is int:
        return float(value)
    _bad_timelimit(task_id, timelimit)


cdef int _bad_timelimit(object task_id, object value) except -1:
    raise InvalidTaskError(
        f"cannot decode task message {_label(task_id)}: timelimit is not a [hard, soft] "
        f"pair of numbers: {_vrepr(value)}"
    )


cdef int _bad_stamped_headers(object task_id, object value) except -1:
    raise InvalidTaskError(
        f"cannot decode task message {_label(task_id)}: stamped_headers is not a list of "
        f"strings: {_vrepr(value)}"
    )


cdef inline object _opt_str(object task_id, str field, object value):
    if value is None or type(value) is str:
        return value
    _bad_str(task_id, field, value)


cdef int _bad_str(object task_id, str field, object value) except -1:
    raise InvalidTaskError(
        f"cannot decode task message {_label(task_id)}: {field} is not a string: "
        f"{_vrepr(value)}"
    )


cdef str _label(object task_id):
    """The task id as error messages show it: bounded, or a placeholder."""
    if type(task_id) is not str or not task_id:
        return "<no id>"
    if len(<str>task_id) > 40:
        return (<str>task_id)[:40] + "…"
    return <str>task_id


cdef str _vrepr(object value):
    """A bounded repr of a bad value for an error message; never raises."""
    cdef str text
    try:
        text = repr(value)
    except Exception:
        text = f"<unrepresentable {type(value).__name__}>"
    if len(text) > 100:
        text = text[:99] + "…"
    return text
