"""redis-py connection arguments from a ``redis://``, ``rediss://`` or ``redis+socket://`` URL.

Shared by the Redis result backend and the Redis broker transport, so both read URLs, TLS
options and timeouts the same way (kombu's and Celery's rules).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from celeriac.errors import ConfigurationError
from celeriac.urls import mask_url

try:
    import redis
    from redis.connection import URL_QUERY_ARGUMENT_PARSERS
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ConfigurationError(
        "redis:// URLs need the redis package: pip install 'celeriac[redis]'"
    ) from exc

__all__ = ["SOCKET_SCHEMES", "check_params", "float_or_none", "redis_params"]

logger = logging.getLogger("celeriac.redis")

SOCKET_SCHEMES = ("redis+socket", "socket")
_SSL_KEYS = ("ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
_CERT_REQS = {
    "CERT_REQUIRED": ssl.CERT_REQUIRED,
    "required": ssl.CERT_REQUIRED,
    "CERT_OPTIONAL": ssl.CERT_OPTIONAL,
    "optional": ssl.CERT_OPTIONAL,
    "CERT_NONE": ssl.CERT_NONE,
    "none": ssl.CERT_NONE,
}


def float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def redis_params(
    url: str,
    what: str,
    defaults: Mapping[str, Any],
    use_ssl: Mapping[str, Any] | bool | None = None,
) -> dict[str, Any]:
    """redis-py ``ConnectionPool`` arguments for ``url``.

    ``defaults`` (timeouts, ``max_connections``...) and
    ``use_ssl`` (a dict of ``ssl_*`` options, or ``True``) come first; the URL and then its
    query arguments win. ``rediss://`` verifies the server certificate unless
    ``ssl_cert_reqs`` says otherwise. ``what`` names the user of the URL in error messages
    (``"result backend"``, ``"broker"``).

    Raises:
        ConfigurationError: unknown scheme, bad db, port or query value, or TLS options on a
            plain ``redis://`` URL.
    """
    masked = mask_url(url)
    params: dict[str, Any] = {"host": "localhost", "port": 6379, "password": None}
    params.update(defaults)
    tls = bool(use_ssl)
    if isinstance(use_ssl, Mapping):
        params.update(use_ssl)

    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    db: Any
    if parts.scheme in SOCKET_SCHEMES:
        for name in ("host", "port", "socket_connect_timeout"):
            params.pop(name, None)
        params["connection_class"] = redis.UnixDomainSocketConnection
        params["path"] = unquote(parts.path)
        db = query.pop("virtual_host", None) or 0
        tls = False
    elif parts.scheme in ("redis", "rediss"):
        try:
            port = parts.port
        except ValueError:
            raise ConfigurationError(f"invalid port in {what} URL {masked}") from None
        if parts.hostname:
            params["host"] = parts.hostname
        if port:
            params["port"] = port
        db = parts.path.strip("/") or 0
        if parts.scheme == "rediss":
            tls = True
        elif any(name in query for name in _SSL_KEYS):
            raise ConfigurationError(
                f"TLS options in {what} URL {masked}: use the rediss:// scheme"
            )
    else:
        raise ConfigurationError(f"not a redis {what} URL: {masked}")
    if parts.username:
        params["username"] = unquote(parts.username)
    if parts.password:
        params["password"] = unquote(parts.password)
    try:
        params["db"] = int(db)
    except ValueError:
        raise ConfigurationError(
            f"invalid database {db!r} in {what} URL {masked}: not an integer"
        ) from None

    for name, value in query.items():
        parser: Callable[[str], Any] | None = URL_QUERY_ARGUMENT_PARSERS.get(name)  # type: ignore[assignment]
        try:
            params[name] = parser(value) if parser is not None else value
        except (TypeError, ValueError):
            raise ConfigurationError(
                f"invalid value {value!r} for {name} in {what} URL {masked}"
            ) from None

    if tls:
        params["connection_class"] = redis.SSLConnection
        params["ssl_cert_reqs"] = _cert_reqs(params.get("ssl_cert_reqs"), what, masked)
    return params


def _cert_reqs(value: Any, what: str, masked: str) -> ssl.VerifyMode:
    if value is None:
        return ssl.CERT_REQUIRED  # verify unless told otherwise
    reqs = _CERT_REQS.get(value, value) if isinstance(value, str) else value
    if reqs not in (ssl.CERT_REQUIRED, ssl.CERT_OPTIONAL, ssl.CERT_NONE):
        raise ConfigurationError(
            f"invalid ssl_cert_reqs {value!r} for {what} {masked}: "
            "use CERT_REQUIRED, CERT_OPTIONAL or CERT_NONE"
        )
    if reqs != ssl.CERT_REQUIRED:
        logger.warning(
            "%s %s does not verify the server certificate (ssl_cert_reqs=%s)",
            what,
            masked,
            value,
        )
    return ssl.VerifyMode(reqs)


def check_params(pool: redis.ConnectionPool, what: str, masked: str) -> None:
    """Fail at configuration time on an option redis-py does not know.

    redis-py only builds connections on first use, where an unknown URL query argument would
    fail deep inside a task; building one opens no socket.
    """
    try:
        pool.connection_class(**pool.connection_kwargs)
    except TypeError as exc:
        raise ConfigurationError(f"invalid option for {what} {masked}: {exc}") from None
