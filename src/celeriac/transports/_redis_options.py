"""The Redis transport's settings from the broker URL and ``broker_transport_options`` (kombu's)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from celeriac._redis_params import float_or_none, redis_params
from celeriac.errors import ConfigurationError
from celeriac.urls import mask_url

__all__ = ["RedisOptions", "parse_options"]

# kombu's defaults (kombu/transport/redis.py, Channel and Transport)
_DEFAULT_STEPS = (0, 3, 6, 9)
_HEALTH_CHECK_INTERVAL = 25.0

# what kombu's channel takes from transport options and this transport uses
_KNOWN = frozenset(
    {
        "visibility_timeout",
        "global_keyprefix",
        "socket_timeout",
        "socket_connect_timeout",
        "socket_keepalive",
        "health_check_interval",
        "priority_steps",
        "sep",
        "body_encoding",
        "unacked_key",
        "unacked_index_key",
        "unacked_mutex_key",
        "unacked_mutex_expire",
        "unacked_restore_interval",
        "fanout_prefix",
        "fanout_patterns",
        "max_connections",
        "retry_on_timeout",
        "client_name",
        "brpop_timeout",
        "ssl",
        "connect_timeout",
    }
)


@dataclass(frozen=True)
class RedisOptions:
    """What the transport does, beside how it connects (see :func:`parse_options`)."""

    db: int
    visibility_timeout: float = 3600.0
    global_keyprefix: str = ""
    priority_steps: tuple[int, ...] = _DEFAULT_STEPS
    sep: str = "\x06\x16"
    body_encoding: str = "base64"
    unacked_key: str = "unacked"
    unacked_index_key: str = "unacked_index"
    unacked_mutex_key: str = "unacked_mutex"
    unacked_mutex_expire: float = 300.0
    #: seconds between sweeps for deliveries past the visibility timeout
    unacked_restore_interval: float = 10.0
    fanout_prefix: str = ""
    fanout_patterns: bool = True
    brpop_timeout: int = 1
    #: seconds of silence on the BRPOP connection, beyond its timeout, that count as dead
    health_check_interval: float = _HEALTH_CHECK_INTERVAL


def parse_options(url: str, options: Mapping[str, Any]) -> tuple[dict[str, Any], RedisOptions]:
    """redis-py connection arguments and :class:`RedisOptions` for a broker URL.

    ``options`` are ``broker_transport_options`` (kombu's names) plus what the app passes
    every transport: ``connect_timeout`` (``broker_connection_timeout``) and ``ssl``
    (``broker_use_ssl``). Other names are ignored.

    Raises:
        ConfigurationError: a bad URL or a value of the wrong kind (the message names it).
    """
    masked = mask_url(url)
    opts = {k: v for k, v in options.items() if k in _KNOWN and v is not None}
    health = _number(opts, "health_check_interval", _HEALTH_CHECK_INTERVAL, masked)
    defaults: dict[str, Any] = {
        "socket_timeout": float_or_none(opts.get("socket_timeout")),
        "socket_connect_timeout": float_or_none(
            opts.get("socket_connect_timeout", opts.get("connect_timeout"))
        ),
        "health_check_interval": health,
        "max_connections": opts.get("max_connections") or 10,
    }
    for name in ("socket_keepalive", "retry_on_timeout", "client_name"):
        if name in opts:
            defaults[name] = opts[name]
    params = redis_params(url, "broker", defaults, opts.get("ssl"))
    steps = opts.get("priority_steps", _DEFAULT_STEPS)
    try:
        steps = tuple(sorted(int(step) for step in steps))
    except (TypeError, ValueError):
        raise ConfigurationError(
            f"invalid priority_steps {steps!r} for broker {masked}: want a list of integers"
        ) from None
    if not steps or steps[0] != 0:
        raise ConfigurationError(
            f"invalid priority_steps {list(steps)!r} for broker {masked}: the first must be 0"
        )
    visibility = _number(opts, "visibility_timeout", 3600.0, masked)
    fanout_prefix = opts.get("fanout_prefix", True)
    if fanout_prefix is True:
        prefix = f"/{params['db']}."
    elif isinstance(fanout_prefix, str):
        prefix = fanout_prefix
    else:
        prefix = ""
    restore_every = min(_number(opts, "unacked_restore_interval", 10.0, masked), visibility)
    config = RedisOptions(
        db=int(params["db"]),
        visibility_timeout=visibility,
        global_keyprefix=str(opts.get("global_keyprefix", "")),
        priority_steps=steps,
        sep=str(opts.get("sep", "\x06\x16")),
        body_encoding=str(opts.get("body_encoding", "base64")),
        unacked_key=str(opts.get("unacked_key", "unacked")),
        unacked_index_key=str(opts.get("unacked_index_key", "unacked_index")),
        unacked_mutex_key=str(opts.get("unacked_mutex_key", "unacked_mutex")),
        unacked_mutex_expire=_number(opts, "unacked_mutex_expire", 300.0, masked),
        unacked_restore_interval=max(0.1, restore_every),
        fanout_prefix=prefix,
        fanout_patterns=bool(opts.get("fanout_patterns", True)),
        brpop_timeout=max(1, int(_number(opts, "brpop_timeout", 1, masked))),
        health_check_interval=health,
    )
    return params, config


def _number(opts: Mapping[str, Any], name: str, default: float, masked: str) -> float:
    value = opts.get(name, default)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigurationError(
            f"invalid {name} {value!r} for broker {masked}: not a number"
        ) from None
    if number < 0:
        raise ConfigurationError(f"invalid {name} {value!r} for broker {masked}: negative")
    return number
