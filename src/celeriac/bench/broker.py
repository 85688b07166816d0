"""Which broker a bench run uses, and what can be known about it: product, version, process."""

from __future__ import annotations

import os
import socket
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

import psutil  # type: ignore[import-untyped]

from celeriac.bench.cpu import is_local_host, listening_pid
from celeriac.urls import mask_url

__all__ = ["LOCAL_RABBITMQ", "PROBE_ENV", "BrokerInfo", "answers", "choose_broker", "describe"]

LOCAL_RABBITMQ = "amqp://guest:guest@localhost:5672//"

#: the broker tried when none is configured (tests point it at a closed port)
PROBE_ENV = "CELERIAC_BENCH_PROBE_URL"

_DEFAULT_PORTS = {"amqp": 5672, "pyamqp": 5672, "librabbitmq": 5672, "amqps": 5671}


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url.split(";", 1)[0])
    return parts.hostname or "localhost", parts.port or _DEFAULT_PORTS.get(parts.scheme, 5672)


def answers(url: str, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections at the broker URL's host and port."""
    try:
        with socket.create_connection(_address(url), timeout=timeout):
            return True
    except OSError:
        return False


def choose_broker(given: str | None) -> tuple[str, str]:
    """The broker URL to run on, and a note to show when it is not the one asked for.

    A given URL is used as it is. Without one, the local RabbitMQ (or ``$CELERIAC_BENCH_PROBE_URL``)
    is used when it answers, and the embedded broker otherwise, with a note saying so.
    """
    if given:
        return given, ""
    probe = os.environ.get(PROBE_ENV) or LOCAL_RABBITMQ
    if answers(probe):
        return probe, ""
    host, port = _address(probe)
    return "memory://", (
        f"no broker answers on {host}:{port}: running on the embedded in-process broker "
        "(memory://), with the worker in this process"
    )


@dataclass
class BrokerInfo:
    """The broker as the report shows it."""

    url: str
    product: str
    host: str = ""
    port: int = 0
    local: bool = False
    pid: int | None = None
    process: str = ""
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def describe(url: str) -> BrokerInfo:
    """Connect once to learn the broker's product and version, and find its process.

    Raises:
        celeriac.errors.TransportError: the broker cannot be reached.
    """
    if url.startswith("memory://"):
        return BrokerInfo(
            mask_url(url),
            "celeriac embedded broker (memory://, in this process)",
            local=True,
            process="this process",
            note="in-process broker: its CPU is part of the client's",
        )
    from celeriac.transports.registry import transport_for_url

    transport = transport_for_url(url, heartbeat=0)
    transport.connect()
    try:
        version = getattr(transport, "server_product_version", None)
        product = version() if callable(version) else type(transport).__name__
    finally:
        transport.close()
    host, port = _address(url)
    info = BrokerInfo(mask_url(url), str(product), host, port, is_local_host(host))
    if not info.local:
        info.note = f"broker on {host} is not on this machine: its CPU is not measured"
        return info
    info.pid = listening_pid(port)
    if info.pid is None:
        info.note = (
            f"no process listening on port {port} is visible here: the broker's CPU is not measured"
        )
        return info
    try:
        info.process = psutil.Process(info.pid).name()
    except psutil.Error:
        info.process = "?"
    return info
