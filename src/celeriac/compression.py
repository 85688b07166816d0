"""Body compression: the codecs kombu names by MIME type in the ``compression`` header."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType

from celeriac.errors import ConfigurationError, DecodeError, EncodeError

__all__ = ["BROTLI", "BZIP2", "GZIP", "LZMA", "ZSTD", "compress", "decompress"]

GZIP = "application/x-gzip"
"""zlib format despite the name, as kombu writes it for both ``zlib`` and ``gzip``."""
BZIP2 = "application/x-bz2"
LZMA = "application/x-lzma"
ZSTD = "application/zstd"
BROTLI = "application/x-brotli"

_Transform = Callable[[bytes], bytes]
_Codec = tuple[_Transform, _Transform]

# Method names kombu accepts, plus each MIME type naming itself: the header carries the MIME
# type, while settings (``task_compression``) use the short names.
_ALIASES: dict[str, str] = {
    "zlib": GZIP,
    "gzip": GZIP,
    "bzip2": BZIP2,
    "bzip": BZIP2,
    "lzma": LZMA,
    "xz": LZMA,
    "zstd": ZSTD,
    "zstandard": ZSTD,
    "brotli": BROTLI,
    GZIP: GZIP,
    BZIP2: BZIP2,
    LZMA: LZMA,
    ZSTD: ZSTD,
    BROTLI: BROTLI,
}


def _import_optional(module: str, extra: str | None, purpose: str) -> ModuleType:
    """Import an optional dependency, or say which celeriac extra provides it.

    Shared with :mod:`celeriac.serialization`, whose msgpack and yaml codecs are optional too.

    Args:
        module: The module to import, e.g. ``"zstandard"``.
        extra: The celeriac extra that installs it, e.g. ``"zstd"``; None for a standard
            library module that this Python was built without.
        purpose: What needs it, for the message, e.g. ``"zstd compression"``.

    Returns:
        The imported module.

    Raises:
        ConfigurationError: The module is not installed.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        hint = f"pip install celeriac[{extra}]" if extra else "this Python was built without it"
        raise ConfigurationError(
            f"cannot use {purpose}: {module} is not installed ({hint})"
        ) from exc


def _zlib() -> _Codec:
    import zlib

    return zlib.compress, zlib.decompress


def _bz2() -> _Codec:
    bz2 = _import_optional("bz2", None, "bzip2 compression")
    return bz2.compress, bz2.decompress


def _lzma() -> _Codec:
    lzma = _import_optional("lzma", None, "lzma compression")
    return lzma.compress, lzma.decompress


def _zstd() -> _Codec:
    zstandard = _import_optional("zstandard", "zstd", "zstd compression")
    level = 3  # the zstd default, as kombu's compressor uses

    def compress_zstd(data: bytes) -> bytes:
        # One compressor per call: a ZstdCompressor must not be shared between threads.
        out: bytes = zstandard.ZstdCompressor(level=level).compress(data)
        return out

    def decompress_zstd(data: bytes) -> bytes:
        # Frame by frame: kombu's zstd reads concatenated frames and frames written without a
        # content size, and one-shot ZstdDecompressor.decompress() handles neither.
        decompressor = zstandard.ZstdDecompressor()
        parts: list[bytes] = []
        while True:
            frame = decompressor.decompressobj()
            parts.append(frame.decompress(data))
            if not frame.eof:
                raise ValueError("truncated zstd frame")
            data = frame.unused_data
            if not data:
                return b"".join(parts)

    return compress_zstd, decompress_zstd


def _brotli() -> _Codec:
    brotli = _import_optional("brotli", "brotli", "brotli compression")
    return brotli.compress, brotli.decompress


_LOADERS: dict[str, Callable[[], _Codec]] = {
    GZIP: _zlib,
    BZIP2: _bz2,
    LZMA: _lzma,
    ZSTD: _zstd,
    BROTLI: _brotli,
}
_CODECS: dict[str, _Codec] = {}


def _codec(content_type: str) -> _Codec:
    codec = _CODECS.get(content_type)
    if codec is None:
        codec = _CODECS[content_type] = _LOADERS[content_type]()
    return codec


def compress(data: bytes, method: str) -> tuple[bytes, str]:
    """Compress a serialized body.

    Args:
        data: The body.
        method: A method name (``zlib``, ``gzip``, ``bzip2``, ``lzma``, ``xz``, ``zstd``,
            ``brotli``) or its MIME type.

    Returns:
        ``(compressed, content_type)``; the MIME type goes into the ``compression`` header.

    Raises:
        ConfigurationError: Unknown method, or its optional library is not installed.
        EncodeError: The codec failed (e.g. ``data`` is not bytes).
    """
    content_type = _ALIASES.get(method)
    if content_type is None:
        known = ", ".join(sorted(name for name in _ALIASES if "/" not in name))
        raise ConfigurationError(
            f"cannot compress with {method!r}: unknown compression method (known: {known})"
        )
    encode = _codec(content_type)[0]
    try:
        return encode(data), content_type
    except Exception as exc:
        raise EncodeError(f"cannot compress body with {method}: {exc}") from exc


def decompress(data: bytes, compression: str) -> bytes:
    """Decompress a body as named by its ``compression`` header.

    Args:
        data: The compressed body.
        compression: The header value: a MIME type such as ``application/x-gzip``, or a method
            name.

    Returns:
        The decompressed body.

    Raises:
        DecodeError: Unknown compression, or the data is corrupt or truncated.
        ConfigurationError: The codec's optional library is not installed.
    """
    content_type = _ALIASES.get(compression)
    if content_type is None:
        raise DecodeError(f"cannot decompress body: unknown compression {compression!r}")
    decode = _codec(content_type)[1]
    try:
        return decode(data)
    except Exception as exc:
        raise DecodeError(f"cannot decompress {content_type} body: {exc}") from exc
