"""Broker URLs and options of the AMQP transport, and what the handshake derives from them."""

from __future__ import annotations

import platform
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from celeriac.errors import ConfigurationError

__all__ = [
    "AMQP_SCHEMES",
    "AMQPOptions",
    "BrokerAddress",
    "client_properties",
    "make_ssl_context",
    "parse_options",
    "parse_url",
    "parse_urls",
    "product_version",
    "qos_global_for",
    "version_tuple",
]

AMQP_SCHEMES = ("amqp", "amqps", "pyamqp")
DEFAULT_PORT = 5672
DEFAULT_TLS_PORT = 5671

# What start-ok announces when the server announced capabilities (wire notes §8.1).
CLIENT_CAPABILITIES = (
    "authentication_failure_close",
    "connection.blocked",
    "consumer_cancel_notify",
    "per_consumer_qos",
    "publisher_confirms",
)
LOGIN_METHODS = ("PLAIN", "AMQPLAIN")
SSL_KEYS = frozenset({"ca_certs", "cert_reqs", "certfile", "keyfile", "server_hostname"})


@dataclass(frozen=True)
class BrokerAddress:
    """One broker of a (failover) URL list, decoded."""

    host: str
    port: int
    userid: str
    password: str = field(repr=False)
    vhost: str
    tls: bool

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "amqps" if self.tls else "amqp"
        return f"{scheme}://{self.userid}@{host}:{self.port}/{self.vhost.replace('/', '%2F')}"


@dataclass(frozen=True)
class AMQPOptions:
    """The transport options, validated. ``None`` for any of them means its default.

    Attributes:
        heartbeat: seconds between heartbeats asked of the broker; 0 disables them.
        connect_timeout: seconds for the TCP/TLS connect and the whole handshake.
        frame_max: largest frame asked for (the broker's lower limit wins).
        channel_max: most channels asked for (the broker's lower limit wins).
        ssl: ``False``, ``True`` (verify against the system CAs), a dict like Celery's
            ``broker_use_ssl`` or an :class:`ssl.SSLContext`.
        confirm_publish: wait for the broker's publisher confirm of every publish.
        publish_timeout: seconds a publish may wait for a blocked connection, the socket or
            its confirm before it fails.
        rpc_timeout: seconds to wait for the answer to a synchronous method (declare, qos...).
        login_method: ``PLAIN`` or ``AMQPLAIN``.
        connection_name: shown by the broker (``rabbitmqctl list_connections
            user_provided_name``).
    """

    heartbeat: float = 120.0
    connect_timeout: float = 4.0
    frame_max: int = 131072
    channel_max: int = 65535
    ssl: bool | Mapping[str, Any] | ssl.SSLContext = False
    confirm_publish: bool = False
    publish_timeout: float = 10.0
    rpc_timeout: float = 30.0
    login_method: str = "PLAIN"
    connection_name: str | None = None


_FLOATS = ("heartbeat", "connect_timeout", "publish_timeout", "rpc_timeout")
_INTS = {"frame_max": (4096, 2**32 - 1), "channel_max": (1, 65535)}
_BOOLS = ("confirm_publish",)
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, str):
        low = value.strip().lower()
        if low in _TRUE or low in _FALSE:
            return low in _TRUE
        raise ConfigurationError(f"amqp option {name}={value!r} is not a boolean")
    return bool(value)


def parse_options(options: Mapping[str, Any]) -> tuple[AMQPOptions, dict[str, Any]]:
    """Validate the options this transport knows; return them and the ones it ignores.

    Strings are accepted for every option (they come from URL queries and config files).

    Raises:
        ConfigurationError: a known option with a bad value.
    """
    values: dict[str, Any] = {}
    ignored: dict[str, Any] = {}
    known = AMQPOptions.__dataclass_fields__
    for name, value in options.items():
        if name not in known:
            ignored[name] = value
            continue
        if value is None:
            continue
        if name in _FLOATS:
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise ConfigurationError(f"amqp option {name}={value!r} is not a number") from None
            if name == "heartbeat" and not number >= 0:
                raise ConfigurationError(f"amqp option {name}={value!r} must be 0 or more")
            if name != "heartbeat" and not number > 0:
                raise ConfigurationError(f"amqp option {name}={value!r} must be more than 0")
            values[name] = number
        elif name in _INTS:
            low, high = _INTS[name]
            try:
                whole = int(value)
            except (TypeError, ValueError):
                raise ConfigurationError(
                    f"amqp option {name}={value!r} is not an integer"
                ) from None
            if not low <= whole <= high:
                raise ConfigurationError(f"amqp option {name}={value!r} is not in {low}..{high}")
            values[name] = whole
        elif name in _BOOLS:
            values[name] = _as_bool(name, value)
        elif name == "ssl":
            values[name] = _ssl_option(value)
        elif name == "login_method":
            method = str(value).upper()
            if method not in LOGIN_METHODS:
                raise ConfigurationError(
                    f"amqp option login_method={value!r} is not one of {', '.join(LOGIN_METHODS)}"
                )
            values[name] = method
        else:
            values[name] = str(value)
    return AMQPOptions(**values), ignored


def _ssl_option(value: Any) -> bool | Mapping[str, Any] | ssl.SSLContext:
    if isinstance(value, ssl.SSLContext):
        return value
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - SSL_KEYS)
        if unknown:
            raise ConfigurationError(
                f"amqp ssl option {unknown[0]!r} is unknown; known: {', '.join(sorted(SSL_KEYS))}"
            )
        return dict(value)
    return _as_bool("ssl", value)


def parse_url(url: str, options: AMQPOptions | None = None) -> tuple[BrokerAddress, dict[str, str]]:
    """Decode one ``amqp://user:pass@host:port/vhost?option=value`` URL.

    The vhost is the percent-decoded path without its first ``/``; an empty path, ``/`` and
    ``//`` all mean ``/``. Missing parts default to guest/guest@localhost, port 5672 (5671 with
    TLS: ``amqps://`` or the ``ssl`` option). Returns the address and the query options.

    Raises:
        ConfigurationError: not an amqp/amqps/pyamqp URL, or a bad port.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ConfigurationError(f"cannot parse broker url {url!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in AMQP_SCHEMES:
        raise ConfigurationError(
            f"cannot use broker url {url!r} for the amqp transport: want amqp://, amqps:// "
            "or pyamqp://"
        )
    query = dict(parse_qsl(parts.query))
    tls = scheme == "amqps" or bool((options or AMQPOptions()).ssl)
    if "ssl" in query:
        tls = tls or _as_bool("ssl", query["ssl"])
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    address = BrokerAddress(
        host=unquote(parts.hostname or "") or "localhost",
        port=port or (DEFAULT_TLS_PORT if tls else DEFAULT_PORT),
        userid=unquote(parts.username) if parts.username is not None else "guest",
        password=unquote(parts.password) if parts.password is not None else "guest",
        vhost=unquote(path) or "/",
        tls=tls,
    )
    return address, query


def parse_urls(
    url: str, options: Mapping[str, Any] | None = None
) -> tuple[list[BrokerAddress], AMQPOptions, dict[str, Any]]:
    """Decode a URL or a ``;``-separated failover list and the transport options.

    Query options of the first URL apply to all; keyword ``options`` win over them. Returns
    the addresses in order, the validated options and the options this transport ignores.

    Raises:
        ConfigurationError: an empty list, a bad URL or a bad option value.
    """
    urls = [part.strip() for part in url.split(";") if part.strip()]
    if not urls:
        raise ConfigurationError(f"broker url {url!r} names no broker")
    _, query = parse_url(urls[0])
    merged: dict[str, Any] = {**query, **(options or {})}
    opts, ignored = parse_options(merged)
    addresses = [parse_url(one, opts)[0] for one in urls]
    return addresses, opts, ignored


def make_ssl_context(opts: AMQPOptions, host: str) -> tuple[ssl.SSLContext, str]:
    """Build the TLS context for ``host``; return it and the name to verify the server as.

    Certificates and host names are verified unless ``cert_reqs`` says ``CERT_NONE``.

    Raises:
        ConfigurationError: a bad ``cert_reqs`` or unreadable certificate files.
    """
    if isinstance(opts.ssl, ssl.SSLContext):
        return opts.ssl, host
    settings: Mapping[str, Any] = opts.ssl if isinstance(opts.ssl, Mapping) else {}
    reqs = _cert_reqs(settings.get("cert_reqs", ssl.CERT_REQUIRED))
    try:
        ctx = ssl.create_default_context(cafile=settings.get("ca_certs"))
        if reqs == ssl.CERT_NONE:
            ctx.check_hostname = False
        ctx.verify_mode = reqs
        if settings.get("certfile"):
            ctx.load_cert_chain(settings["certfile"], settings.get("keyfile"))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"cannot set up TLS for {host}: {exc}") from exc
    return ctx, str(settings.get("server_hostname") or host)


def _cert_reqs(value: Any) -> ssl.VerifyMode:
    if isinstance(value, str):
        name = value.upper()
        name = name if name.startswith("CERT_") else f"CERT_{name}"
        if name in ssl.VerifyMode.__members__:
            return ssl.VerifyMode[name]
    elif isinstance(value, int) and value in (m.value for m in ssl.VerifyMode):
        return ssl.VerifyMode(value)
    raise ConfigurationError(
        f"amqp ssl option cert_reqs={value!r} is not CERT_NONE, CERT_OPTIONAL or CERT_REQUIRED"
    )


def client_properties(
    server_has_capabilities: bool, connection_name: str | None = None
) -> dict[str, Any]:
    """The ``client_properties`` of ``connection.start-ok``.

    Capabilities are announced only to a server that announced its own (py-amqp does the
    same; an old broker may refuse a table it does not expect).
    """
    from celeriac import __version__

    props: dict[str, Any] = {
        "product": "celeriac",
        "product_version": __version__,
        "platform": f"{platform.python_implementation()} {platform.python_version()}",
        "information": "a Celery-compatible task-queue worker runtime",
    }
    if connection_name:
        props["connection_name"] = connection_name
    if server_has_capabilities:
        props["capabilities"] = dict.fromkeys(CLIENT_CAPABILITIES, True)
    return props


def _text(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    return "" if value is None else str(value)


def version_tuple(version: Any) -> tuple[int, ...]:
    """``"3.10.8"`` → ``(3, 10, 8)``; stops at the first part that is not a number."""
    numbers: list[int] = []
    for part in _text(version).split("."):
        match = re.match(r"\d+", part)
        if match is None:
            break
        numbers.append(int(match.group()))
        if match.end() != len(part):
            break
    return tuple(numbers)


def qos_global_for(server_properties: Mapping[str, Any]) -> bool:
    """The ``global`` flag of ``basic.qos`` that limits a whole channel (kombu 5.6+'s rule).

    RabbitMQ 3.3 to 3.x reads ``global=False`` as per consumer, so a channel-wide limit needs
    ``True``; before 3.3, from 4.0 on (wire notes §2.2) and on other brokers the spec's
    meaning holds and ``False`` is right.
    """
    if _text(server_properties.get("product")) != "RabbitMQ":
        return False
    version = version_tuple(server_properties.get("version"))
    return bool(version) and (3, 3) <= version < (4,)


def product_version(server_properties: Mapping[str, Any]) -> str:
    """``"RabbitMQ 3.10.8"`` from ``server_properties`` (``"unknown"`` for missing parts)."""
    product = _text(server_properties.get("product")) or "unknown"
    version = _text(server_properties.get("version")) or "unknown"
    return f"{product} {version}"
