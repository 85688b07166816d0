"""Integration fixtures: a real RabbitMQ, names no other run uses, and cleanup after each test.

The broker is ``CELERIAC_TEST_AMQP_URL`` (default ``amqp://guest:guest@127.0.0.1:5672//``).
When it does not answer, the tests fail with a message saying how to start it: CI starts it,
and a silent skip would hide a broken setup.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import socket
import ssl
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from celeriac.errors import ChannelError, TransportError
from celeriac.transports._amqp_url import parse_url
from celeriac.transports.amqp import AMQPTransport

AMQP_URL = os.environ.get("CELERIAC_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")


@pytest.fixture(scope="session")
def amqp_url() -> str:
    """The test broker's URL, once it is known to answer."""
    transport = AMQPTransport(AMQP_URL, connect_timeout=5)
    try:
        transport.connect()
    except TransportError as exc:
        pytest.fail(
            f"RabbitMQ at {AMQP_URL} does not answer ({exc}); start it with "
            "`rabbitmq-server -detached` or point CELERIAC_TEST_AMQP_URL at one",
            pytrace=False,
        )
    finally:
        transport.close()
    return AMQP_URL


def broker_url(
    *, password: str | None = None, vhost: str | None = None, port: int | None = None
) -> str:
    """The test broker's URL with some parts replaced."""
    b = parse_url(AMQP_URL)[0]
    host = f"[{b.host}]" if ":" in b.host else b.host
    return (
        f"amqp://{quote(b.userid, safe='')}:{quote(password or b.password, safe='')}@{host}:"
        f"{port or b.port}/{quote(vhost or b.vhost, safe='')}"
    )


class Names:
    """Queue and exchange names unique to one test, deleted when it ends."""

    def __init__(self) -> None:
        self.prefix = f"celeriac.test.{uuid.uuid4().hex[:12]}"
        self.queues: list[str] = []
        self.exchanges: list[str] = []

    def queue(self, suffix: str = "q") -> str:
        name = f"{self.prefix}.{suffix}"
        self.queues.append(name)
        return name

    def exchange(self, suffix: str = "x") -> str:
        name = f"{self.prefix}.{suffix}"
        self.exchanges.append(name)
        return name

    def cleanup(self, url: str) -> None:
        transport = AMQPTransport(url)
        transport.connect()
        try:
            for name in self.queues:
                self._delete(transport, transport.delete_queue, name)
            for name in self.exchanges:
                self._delete(transport, transport.delete_exchange, name)
        finally:
            transport.close()

    @staticmethod
    def _delete(transport: AMQPTransport, delete: Callable[[str], Any], name: str) -> None:
        try:
            delete(name)
        except ChannelError:  # e.g. an exclusive queue of a connection that is still open
            transport.connect()


@pytest.fixture
def names(amqp_url: str) -> Iterator[Names]:
    """Unique names (``celeriac.test.<uuid>.<suffix>``); what was named is deleted after."""
    made = Names()
    yield made
    made.cleanup(amqp_url)


TransportFactory = Callable[..., AMQPTransport]


@pytest.fixture
def make_transport(amqp_url: str) -> Iterator[TransportFactory]:
    """``make_transport(url=None, connect=True, **options)``; all are closed after the test."""
    made: list[AMQPTransport] = []

    def factory(url: str | None = None, connect: bool = True, **options: Any) -> AMQPTransport:
        transport = AMQPTransport(url or amqp_url, **options)
        made.append(transport)
        if connect:
            transport.connect()
        return transport

    yield factory
    for transport in made:
        transport.close()


@pytest.fixture
def transport(make_transport: TransportFactory) -> AMQPTransport:
    """A connected transport with default options."""
    return make_transport()


def rabbitmqctl(*args: str) -> str:
    """Run ``rabbitmqctl`` and return its output (fails the test when it fails)."""
    if shutil.which("rabbitmqctl") is None:
        pytest.fail("rabbitmqctl is not on PATH; these tests drive the local RabbitMQ node")
    result = subprocess.run(
        ["rabbitmqctl", *args], capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"rabbitmqctl {' '.join(args)} failed: {result.stderr or result.stdout}")
    return result.stdout


def list_connections() -> list[dict[str, Any]]:
    """The broker's connections as ``{"name", "pid", "client_properties": {...}}`` dicts."""
    # JSON shows pids in Elixir's form, which close_connection does not take: ask twice.
    pids = {}
    for line in rabbitmqctl(
        "list_connections", "-q", "--no-table-headers", "pid", "name"
    ).splitlines():
        pid, _, name = line.partition("\t")
        pids[name] = pid
    raw = json.loads(
        rabbitmqctl("list_connections", "-q", "--formatter", "json", "name", "client_properties")
        or "[]"
    )
    return [
        {
            "name": row["name"],
            "pid": pids.get(row["name"]),
            "client_properties": _table(row["client_properties"]),
        }
        for row in raw
    ]


def _table(rows: list[list[Any]]) -> dict[str, Any]:
    return {key: _table(value) if kind == "table" else value for key, kind, value in rows}


def connection_named(connection_name: str) -> dict[str, Any]:
    """The broker's record of the connection that announced ``connection_name``."""
    for row in list_connections():
        if row["client_properties"].get("connection_name") == connection_name:
            return row
    pytest.fail(f"rabbitmqctl list_connections shows no connection named {connection_name!r}")


def free_port() -> int:
    """A local TCP port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Proxy:
    """A TCP proxy in front of the broker that a test can freeze (it stops forwarding, like a
    network that silently drops packets) and that can terminate TLS for ``amqps://`` tests."""

    def __init__(self, broker_url: str, tls: ssl.SSLContext | None = None) -> None:
        self.broker = parse_url(broker_url)[0]
        self.target = (self.broker.host, self.broker.port)
        self.tls = tls
        self.frozen = threading.Event()
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port = int(self._listener.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            if self.tls is not None:
                client.settimeout(5)
                client = self.tls.wrap_socket(client, server_side=True)
                client.settimeout(None)
            upstream = socket.create_connection(self.target, timeout=5)
            upstream.settimeout(None)
        except OSError:
            client.close()
            return
        self._sockets += [client, upstream]
        threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()
        self._pump(client, upstream)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while not self._stop.is_set():
                if self.frozen.is_set():
                    self._stop.wait(0.02)
                    continue
                pending = isinstance(src, ssl.SSLSocket) and src.pending()
                if not pending and not select.select([src], [], [], 0.1)[0]:
                    continue
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except (OSError, ValueError):
            pass
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def url(self, host: str = "127.0.0.1") -> str:
        """The broker URL through this proxy (``amqps://`` when it terminates TLS)."""
        b = self.broker
        scheme = "amqps" if self.tls is not None else "amqp"
        vhost = quote(b.vhost, safe="")
        user, password = quote(b.userid, safe=""), quote(b.password, safe="")
        return f"{scheme}://{user}:{password}@{host}:{self.port}/{vhost}"

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        for sock in self._sockets:
            sock.close()


@pytest.fixture
def proxy(amqp_url: str) -> Iterator[Proxy]:
    """A freezable proxy to the test broker."""
    made = Proxy(amqp_url)
    yield made
    made.close()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for ``localhost`` and its key, made with ``openssl``."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not on PATH: cannot make a certificate for the TLS tests")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def tls_proxy(amqp_url: str, tls_files: tuple[Path, Path]) -> Iterator[Proxy]:
    """A proxy that speaks TLS (certificate ``tls_files``) to the client, plain to the broker."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*tls_files)
    made = Proxy(amqp_url, tls=ctx)
    yield made
    made.close()
