"""Message body serializers as kombu puts them on the wire: json, pickle, msgpack, yaml, raw."""

from __future__ import annotations

import functools
import os
import pickle
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any

from celeriac.compression import _import_optional, compress, decompress
from celeriac.errors import (
    ConfigurationError,
    ContentDisallowed,
    DecodeError,
    EncodeError,
    SerializationError,
)

# Aliases only: tests/unit/test_serialization.py still patches these names here, where they
# lived before the json codec moved. Patching them does not reach celeriac.jsoncodec.
from celeriac.jsoncodec import json_dumps, json_loads

__all__ = [
    "TRUSTED_CONTENT",
    "Decoder",
    "Encoder",
    "accept_content",
    "compress",
    "decompress",
    "dumps",
    "json_dumps",
    "json_loads",
    "loads",
    "register",
    "serializer_for_content_type",
    "unregister",
]

Encoder = Callable[[Any], "bytes | str"]
"""Turns a value into a body; a ``str`` result is encoded with the content encoding."""
Decoder = Callable[[Any], Any]
"""Turns a body (``bytes``, or ``str`` if the transport gave text) back into a value."""

TRUSTED_CONTENT = frozenset({"application/data", "application/text"})
"""Content types that are never deserialized, so always accepted."""

_BINARY_ENCODINGS = frozenset({"binary", "ascii-8bit"})

# -- pickle, msgpack, yaml -------------------------------------------------------------------


def _pickle_protocol() -> int:
    value = os.environ.get("PICKLE_PROTOCOL", "4")
    try:
        return int(value)
    except ValueError:
        raise ConfigurationError(
            f"cannot read PICKLE_PROTOCOL: {value!r} is not an integer"
        ) from None


_PICKLE_PROTOCOL = _pickle_protocol()


def _pickle_dumps(obj: Any) -> bytes:
    return pickle.dumps(obj, protocol=_PICKLE_PROTOCOL)


def _pickle_loads(data: bytes | str) -> Any:
    return pickle.loads(data.encode("utf-8") if isinstance(data, str) else data)


@functools.cache
def _msgpack() -> ModuleType:
    return _import_optional("msgpack", "msgpack", "the msgpack serializer")


def _msgpack_dumps(obj: Any) -> bytes:
    out: bytes = _msgpack().packb(obj, use_bin_type=True)
    return out


def _msgpack_loads(data: bytes | str) -> Any:
    return _msgpack().unpackb(data, raw=False)


@functools.cache
def _yaml() -> ModuleType:
    return _import_optional("yaml", "yaml", "the yaml serializer")


def _yaml_dumps(obj: Any) -> bytes:
    out: str = _yaml().safe_dump(obj)
    return out.encode("utf-8")


def _yaml_loads(data: bytes | str) -> Any:
    return _yaml().safe_load(data)


# -- registry --------------------------------------------------------------------------------

_ENCODERS: dict[str, tuple[str, str, Encoder]] = {}
_DECODERS: dict[str, Decoder] = {}
_NAME_TO_TYPE: dict[str, str] = {}
_TYPE_TO_NAME: dict[str, str] = {}


def register(
    name: str,
    encoder: Encoder | None,
    decoder: Decoder | None,
    content_type: str,
    content_encoding: str = "utf-8",
) -> None:
    """Register a serializer, replacing any of the same name or content type.

    Args:
        name: The name settings use (``task_serializer``, ``accept_content``).
        encoder: Value to body, or None to register decoding only.
        decoder: Body to value, or None to register encoding only. It gets the body as the
            transport delivered it, ``bytes`` (or ``str``), whatever the content encoding.
        content_type: The MIME type that goes on the wire.
        content_encoding: ``utf-8`` for text formats, ``binary`` for the rest.

    Raises:
        ConfigurationError: ``content_type`` is one of the raw types, which are never decoded.
    """
    if content_type in TRUSTED_CONTENT:
        raise ConfigurationError(
            f"cannot register serializer {name!r}: {content_type} is raw content, never decoded"
        )
    if encoder is not None:
        _ENCODERS[name] = (content_type, content_encoding, encoder)
    if decoder is not None:
        _DECODERS[content_type] = decoder
    _NAME_TO_TYPE[name] = content_type
    _TYPE_TO_NAME[content_type] = name


def unregister(name: str) -> None:
    """Remove a serializer by name.

    Raises:
        ConfigurationError: No serializer has that name.
    """
    try:
        content_type = _NAME_TO_TYPE.pop(name)
    except KeyError:
        raise ConfigurationError(f"cannot unregister serializer {name!r}: not registered") from None
    _ENCODERS.pop(name, None)
    _DECODERS.pop(content_type, None)
    _TYPE_TO_NAME.pop(content_type, None)


register("json", json_dumps, json_loads, "application/json", "utf-8")
register("pickle", _pickle_dumps, _pickle_loads, "application/x-python-serialize", "binary")
register("msgpack", _msgpack_dumps, _msgpack_loads, "application/x-msgpack", "binary")
register("yaml", _yaml_dumps, _yaml_loads, "application/x-yaml", "utf-8")


def _known() -> str:
    return ", ".join(sorted(_NAME_TO_TYPE))


def dumps(obj: Any, serializer: str = "json") -> tuple[str, str, bytes]:
    """Serialize a message body.

    Args:
        obj: The value.
        serializer: A registered name: ``json``, ``pickle``, ``msgpack``, ``yaml``, or one
            added with :func:`register`.

    Returns:
        ``(content_type, content_encoding, payload)``.

    Raises:
        ConfigurationError: Unknown serializer, or its optional library is not installed.
        EncodeError: The value cannot be serialized.
    """
    try:
        content_type, content_encoding, encoder = _ENCODERS[serializer]
    except KeyError:
        raise ConfigurationError(
            f"cannot encode with serializer {serializer!r}: not registered (known: {_known()})"
        ) from None
    try:
        payload = encoder(obj)
    except (SerializationError, ConfigurationError):
        raise
    except Exception as exc:
        raise EncodeError(f"cannot encode {type(obj).__name__} with {serializer}: {exc}") from exc
    if type(payload) is not bytes:
        payload = _to_bytes(payload, serializer, content_encoding)
    return content_type, content_encoding, payload


def _to_bytes(payload: bytes | str, serializer: str, content_encoding: str) -> bytes:
    if not isinstance(payload, str):
        return bytes(payload)
    encoding = "utf-8" if content_encoding in _BINARY_ENCODINGS else content_encoding
    try:
        return payload.encode(encoding)
    except (LookupError, UnicodeEncodeError) as exc:
        raise EncodeError(
            f"cannot encode {serializer} output as {content_encoding}: {exc}"
        ) from exc


def loads(
    data: bytes | str,
    content_type: str | None,
    content_encoding: str | None,
    accept: frozenset[str] | None = None,
) -> Any:
    """Deserialize a message body, refusing content types that are not accepted.

    Args:
        data: The body.
        content_type: Its MIME type; missing means ``application/data``.
        content_encoding: Its character set; for raw content, ``binary`` keeps bytes and any
            text encoding (missing means ``utf-8``) gives ``str``.
        accept: MIME types allowed (see :func:`accept_content`); None accepts every
            registered serializer. Raw content is always accepted.

    Returns:
        The value, or the raw body for ``application/data`` and ``application/text``.

    Raises:
        ContentDisallowed: The content type is not in ``accept``; nothing was deserialized.
        DecodeError: The body cannot be decoded, or no serializer has its content type.
        ConfigurationError: The serializer's optional library is not installed.
    """
    if not content_type:
        content_type = "application/data"
    if accept is not None and content_type not in accept and content_type not in TRUSTED_CONTENT:
        name = _TYPE_TO_NAME.get(content_type)
        described = f"{name} ({content_type})" if name else content_type
        raise ContentDisallowed(f"refusing to deserialize untrusted content of type {described}")
    decoder = _DECODERS.get(content_type)
    if decoder is None:
        if content_type in TRUSTED_CONTENT:
            return _raw(data, content_type, content_encoding)
        raise DecodeError(f"cannot decode {content_type} body: no serializer for this type")
    if type(data) is not bytes and not isinstance(data, str):
        data = bytes(data)  # memoryview or bytearray from a transport buffer
    try:
        return decoder(data)
    except (SerializationError, ConfigurationError):
        raise
    except Exception as exc:
        raise DecodeError(f"cannot decode {content_type} body: {exc}") from exc


def _raw(data: bytes | str, content_type: str, content_encoding: str | None) -> bytes | str:
    if isinstance(data, str):
        return data
    encoding = (content_encoding or "utf-8").lower()  # kombu reads a missing encoding as utf-8
    if encoding in _BINARY_ENCODINGS:
        return data
    try:
        return bytes(data).decode(encoding)
    except LookupError as exc:
        raise DecodeError(
            f"cannot decode {content_type} body: unknown text encoding {content_encoding!r}"
        ) from exc
    except UnicodeDecodeError as exc:
        raise DecodeError(
            f"cannot decode {content_type} body: invalid {encoding} at byte {exc.start}"
        ) from exc


def accept_content(names: Iterable[str]) -> frozenset[str]:
    """Turn an ``accept_content`` setting into the MIME types :func:`loads` takes.

    Args:
        names: Serializer names (``json``, ``pickle``, ``msgpack``, ``yaml``, or registered
            ones) or MIME types (anything with a ``/``), mixed freely. A single string is read
            as one name, not as its characters.

    Returns:
        The MIME types.

    Raises:
        ConfigurationError: A name that is neither registered nor a MIME type.
    """
    if isinstance(names, str):
        names = (names,)
    types: set[str] = set()
    for name in names:
        if "/" in name:
            types.add(name)
            continue
        try:
            types.add(_NAME_TO_TYPE[name])
        except KeyError:
            raise ConfigurationError(
                f"cannot accept content {name!r}: no such serializer (known: {_known()})"
            ) from None
    return frozenset(types)


def serializer_for_content_type(content_type: str) -> str:
    """Name of the serializer registered for a MIME type (``application/json`` -> ``json``).

    Raises:
        ConfigurationError: No serializer is registered for it.
    """
    try:
        return _TYPE_TO_NAME[content_type]
    except KeyError:
        raise ConfigurationError(
            f"cannot name the serializer for {content_type!r}: none registered"
        ) from None
