"""Picks the transport class for a broker URL by its scheme, importing it only when used."""

from __future__ import annotations

import importlib
import threading
from typing import Any, cast

from celeriac.errors import ConfigurationError
from celeriac.transports.base import Transport

__all__ = ["known_schemes", "register_transport", "split_urls", "transport_for_url"]

# Values are "module:Class" strings so that naming a scheme never imports its client library.
_TRANSPORTS: dict[str, str | type[Any]] = {
    "memory": "celeriac.transports.memory:MemoryTransport",
    "amqp": "celeriac.transports.amqp:AMQPTransport",
    "amqps": "celeriac.transports.amqp:AMQPTransport",
    "pyamqp": "celeriac.transports.amqp:AMQPTransport",
    "librabbitmq": "celeriac.transports.librabbitmq:LibRabbitMQTransport",
    "redis": "celeriac.transports.redis:RedisTransport",
    "rediss": "celeriac.transports.redis:RedisTransport",
    "redis+socket": "celeriac.transports.redis:RedisTransport",
    "socket": "celeriac.transports.redis:RedisTransport",
}
_lock = threading.Lock()


def register_transport(scheme: str, target: str | type[Any]) -> None:
    """Make URLs with ``scheme`` use ``target``, a class or a ``"module:Class"`` string.

    A later registration of the same scheme replaces the earlier one.

    Raises:
        ConfigurationError: the scheme is empty or the string is not ``"module:Class"``.
    """
    scheme = scheme.lower()
    if not scheme or "://" in scheme:
        raise ConfigurationError(f"cannot register transport scheme {scheme!r}: want e.g. 'amqp'")
    if isinstance(target, str):
        module, _, attr = target.partition(":")
        if not module or not attr:
            raise ConfigurationError(
                f"cannot register transport {target!r} for {scheme!r}: want 'module:Class'"
            )
    with _lock:
        _TRANSPORTS[scheme] = target


def known_schemes() -> list[str]:
    """Return the registered URL schemes, sorted."""
    with _lock:
        return sorted(_TRANSPORTS)


def _scheme_of(url: str) -> str:
    scheme, sep, _ = url.partition("://")
    if not sep or not scheme:
        raise ConfigurationError(f"cannot use broker url {url!r}: it has no scheme (memory://...)")
    return scheme.lower()


def _load(scheme: str, target: str | type[Any]) -> type[Any]:
    if not isinstance(target, str):
        return target
    module_name, _, attr = target.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(
            f"cannot load the {scheme}:// transport {target!r}: {exc}"
        ) from exc
    if not isinstance(obj, type):
        raise ConfigurationError(f"cannot load the {scheme}:// transport {target!r}: not a class")
    with _lock:
        # Keep the class so later lookups skip the import machinery.
        if _TRANSPORTS.get(scheme) == target:
            _TRANSPORTS[scheme] = obj
    return obj


def transport_for_url(url: str, **options: Any) -> Transport:
    """Create the (not yet connected) transport for one broker URL.

    Args:
        url: a broker URL, or a ``;``-separated failover list for a transport whose class sets
            ``supports_failover`` (AMQP tries the brokers in turn).
        **options: passed to the transport class.

    Raises:
        ConfigurationError: no scheme, an unknown scheme (the message lists the known ones),
            a failover list the transport cannot take, or a transport module that cannot be
            imported.
    """
    urls = split_urls(url) if ";" in url else [url]
    schemes = {_scheme_of(one) for one in urls}
    scheme = _scheme_of(urls[0])
    with _lock:
        target = _TRANSPORTS.get(scheme)
    if target is None:
        known = ", ".join(f"{s}://" for s in known_schemes())
        raise ConfigurationError(f"unknown broker url scheme {scheme!r} in {url!r}; known: {known}")
    cls = _load(scheme, target)
    if len(urls) > 1 and not (getattr(cls, "supports_failover", False) and len(schemes) == 1):
        raise ConfigurationError(
            f"cannot open {url!r}: the {scheme}:// transport takes one broker, not a failover "
            "list (or the list mixes schemes)"
        )
    return cast(Transport, cls(url, **options))


def split_urls(url: str) -> list[str]:
    """Split a ``;``-separated failover list (``"amqp://a//;amqp://b//"``) into its URLs.

    Raises:
        ConfigurationError: the list holds no URL.
    """
    urls = [part.strip() for part in url.split(";") if part.strip()]
    if not urls:
        raise ConfigurationError(f"broker url {url!r} names no broker")
    return urls
