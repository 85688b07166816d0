"""One AMQP 0-9-1 connection: the socket, the handshake, framed reads and writes, heartbeats."""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import ssl
import threading
import weakref
from time import monotonic
from typing import Any

from celeriac._accel import amqp_codec as codec
from celeriac.errors import ConnectionBlocked, ConnectionError, ProtocolError, TransportError
from celeriac.transports._amqp_url import (
    AMQPOptions,
    BrokerAddress,
    client_properties,
    make_ssl_context,
)

__all__ = ["Connection"]

logger = logging.getLogger("celeriac.transports.amqp")

# One recv takes what a busy broker has buffered: many small deliveries per system call.
RECV_SIZE = 256 * 1024
_HAS_POLL = hasattr(select, "poll")


class _Readiness:
    """Waits until the socket (and optionally the wakeup socket) is readable.

    ``poll`` where there is one: ``select`` cannot watch descriptors above 1023.
    """

    def __init__(self, fds: tuple[int, ...]) -> None:
        self.fds = fds
        if _HAS_POLL:
            self._poll = select.poll()
            for fd in fds:
                self._poll.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP)

    def wait(self, timeout: float | None) -> list[int]:
        if not _HAS_POLL:
            return list(select.select(self.fds, [], [], timeout)[0])
        ms = None if timeout is None else max(0, int(timeout * 1000 + 0.999))
        return [fd for fd, _ in self._poll.poll(ms)]


class Connection:
    """A socket to one broker after ``connection.open``, with its frame decoder.

    Reading is not locked here: the transport lets one thread at a time call :meth:`read`.
    Every write goes through :meth:`send` (or :meth:`send_locked` under :attr:`write_lock`),
    so frames from several threads never interleave. A connection that failed once stays
    dead: :attr:`error` says why, and every later call raises a copy of it.
    """

    def __init__(self, address: BrokerAddress, options: AMQPOptions) -> None:
        self.address = address
        self.options = options
        self.sock: socket.socket | None = None
        self.decoder = codec.FrameDecoder(options.frame_max)
        self.write_lock = threading.Lock()
        self.server_properties: dict[str, Any] = {}
        self.frame_max = options.frame_max
        self.channel_max = options.channel_max
        self.heartbeat = 0
        self.error: ConnectionError | None = None
        self.last_recv = self.last_sent = monotonic()
        self._backlog: list[Any] = []
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stop = threading.Event()
        self._ready: _Readiness | None = None
        self._ready_or_woken: _Readiness | None = None

    def __repr__(self) -> str:
        return f"<amqp Connection {self.address} {'dead' if self.error else 'alive'}>"

    # -- opening ---------------------------------------------------------------------------

    def open(self) -> None:
        """Connect, log in, tune and open the vhost, all within ``connect_timeout``.

        Raises:
            ConnectionError: the broker is unreachable, refused the login or the vhost, or did
                not finish the handshake in time (``reply_code``/``reply_text`` when it said why).
        """
        opts, address = self.options, self.address
        deadline = monotonic() + opts.connect_timeout
        try:
            sock = socket.create_connection((address.host, address.port), opts.connect_timeout)
        except OSError as exc:
            raise ConnectionError(f"cannot connect to {address}: {exc}") from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if address.tls:
                ctx, server_name = make_ssl_context(opts, address.host)
                sock = ctx.wrap_socket(sock, server_hostname=server_name)
            self.sock = sock
            self._ready = _Readiness((sock.fileno(),))
            self._ready_or_woken = _Readiness((sock.fileno(), self._wake_r.fileno()))
            self._handshake(deadline)
            sock.settimeout(opts.publish_timeout)
        except OSError as exc:
            self.dispose()
            raise ConnectionError(f"cannot connect to {address}: {exc}") from exc
        except BaseException:
            self.dispose()
            raise
        if self.heartbeat:
            thread = threading.Thread(
                target=_send_heartbeats,
                args=(weakref.ref(self), self._stop, self.heartbeat / 2),
                name=f"celeriac-amqp-heartbeat-{address.host}:{address.port}",
                daemon=True,
            )
            thread.start()

    def _handshake(self, deadline: float) -> None:
        opts, address = self.options, self.address
        self.send(codec.PROTOCOL_HEADER, "send the protocol header")
        args = self._expect(deadline, codec.CONNECTION_START)
        server_props = args[2]
        self.server_properties = dict(server_props)
        mechanisms = _words(args[3])
        if opts.login_method not in mechanisms:
            raise ConnectionError(
                f"cannot log in to {address}: the broker offers {' '.join(mechanisms) or 'no'} "
                f"login method, not {opts.login_method}"
            )
        if opts.login_method == "AMQPLAIN":
            table = codec.encode_table({"LOGIN": address.userid, "PASSWORD": address.password})
            response = table[4:]  # AMQPLAIN sends the table's entries without its length
        else:
            response = f"\0{address.userid}\0{address.password}".encode()
        locales = _words(args[4])
        locale = "en_US" if "en_US" in locales or not locales else locales[0]
        props = client_properties(
            isinstance(server_props.get("capabilities"), dict), opts.connection_name
        )
        start_ok = (props, opts.login_method, response, locale)
        self.send(codec.encode_method(0, codec.CONNECTION_START_OK, start_ok), "log in")
        args = self._expect(deadline, codec.CONNECTION_TUNE)
        server_channels, server_frame, server_heartbeat = args
        self.channel_max = min(server_channels or opts.channel_max, opts.channel_max)
        self.frame_max = min(server_frame or opts.frame_max, opts.frame_max)
        self.heartbeat = _negotiate_heartbeat(opts.heartbeat, server_heartbeat)
        tune_ok = (self.channel_max, self.frame_max, self.heartbeat)
        self.send(codec.encode_method(0, codec.CONNECTION_TUNE_OK, tune_ok), "tune")
        self.decoder.frame_max = self.frame_max
        open_args = (address.vhost,)
        self.send(codec.encode_method(0, codec.CONNECTION_OPEN, open_args), "open the vhost")
        self._expect(deadline, codec.CONNECTION_OPEN_OK)

    def _expect(self, deadline: float, method: int) -> tuple[Any, ...]:
        """Read until the connection-level ``method`` arrives; a close or EOF raises."""
        name = codec.METHOD_NAMES.get(method, str(method))
        while True:
            try:
                events = self.read(deadline)
            except ConnectionError as exc:
                if method == codec.CONNECTION_START:
                    raise
                raise ConnectionError(
                    f"cannot open {self.address}: the broker closed the connection while we "
                    f"waited for {name} (wrong credentials or vhost?): {exc}"
                ) from exc
            if not events:
                raise ConnectionError(
                    f"cannot open {self.address}: no {name} from the broker within "
                    f"{self.options.connect_timeout:g}s"
                )
            while events:
                event = events.pop(0)
                if not isinstance(event, tuple) or event[0] != 0:
                    continue
                if event[1] == method:
                    self._backlog = events
                    return tuple(event[2])
                if event[1] == codec.CONNECTION_CLOSE:
                    code, text = event[2][0], event[2][1]
                    self._answer_close()
                    raise ConnectionError(
                        f"cannot open {self.address}: the broker refused: {text} ({code})",
                        code,
                        text,
                    )
                if event[1] == codec.CONNECTION_SECURE:
                    raise ConnectionError(
                        f"cannot log in to {self.address}: the broker asks for a SASL challenge "
                        "(connection.secure), which celeriac does not support"
                    )

    def _answer_close(self) -> None:
        with contextlib.suppress(TransportError):
            self.send(codec.encode_method(0, codec.CONNECTION_CLOSE_OK, ()), "answer close")

    # -- reading ---------------------------------------------------------------------------

    def read(self, deadline: float | None, wakeup: bool = False) -> list[Any] | None:
        """Wait until ``deadline`` (``None``: no limit) for frames; return the decoded events.

        Returns ``[]`` at the deadline and ``None`` when :meth:`wake` was called (only with
        ``wakeup=True``). Checks the broker's heartbeats while it waits.

        Raises:
            ConnectionError: the connection is (or just went) dead; missed heartbeats.
        """
        if self._backlog:
            backlog, self._backlog = self._backlog, []
            return backlog
        if self.error is not None:
            raise self.copy_error()
        sock, ready = self.sock, self._ready_or_woken if wakeup else self._ready
        assert sock is not None and ready is not None
        hb = self.heartbeat
        while True:
            if isinstance(sock, ssl.SSLSocket) and sock.pending():
                fds = list(ready.fds[:1])
            else:
                wait = None if deadline is None else max(0.0, deadline - monotonic())
                if hb and (wait is None or wait > hb):
                    wait = hb
                try:
                    fds = ready.wait(wait)
                except OSError as exc:  # the socket was closed under us
                    raise self._lost(exc) from exc
            if self.error is not None:  # closed by another thread meanwhile
                raise self.copy_error()
            if len(fds) > 1 or (fds and fds[0] != ready.fds[0]):
                self.drain_wakeups()
                return None
            if fds:
                try:
                    data = sock.recv(RECV_SIZE)
                except (TimeoutError, ssl.SSLWantReadError):
                    continue
                except OSError as exc:
                    raise self._lost(exc) from exc
                if not data:
                    raise self._lost(None)
                self.last_recv = monotonic()
                try:
                    events: list[Any] = self.decoder.feed(data)
                except ProtocolError as exc:
                    self.kill(ConnectionError(f"connection to {self.address} broke: {exc}"))
                    raise self.copy_error() from exc
                if events:
                    return events
                continue
            now = monotonic()
            if hb and now - self.last_recv > 2 * hb:
                silent = now - self.last_recv
                self.kill(
                    ConnectionError(
                        f"missed heartbeats from the broker at {self.address}: nothing received "
                        f"for {silent:.1f}s (heartbeat {hb}s)"
                    )
                )
                raise self.copy_error()
            if deadline is not None and now >= deadline:
                return []

    def readable(self) -> bool:
        """Whether :meth:`read` has something to read now (or the socket closed).

        Safe while another thread reads: it polls with its own poll object (one may not be
        polled from two threads at once).
        """
        sock = self.sock
        if sock is None or self._backlog or self.error is not None:
            return True
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True
        try:
            if not _HAS_POLL:
                return bool(select.select([sock], [], [], 0)[0])
            poller = select.poll()
            poller.register(sock.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
            return bool(poller.poll(0))
        except (OSError, ValueError):
            return True

    def buffered(self) -> bool:
        """Whether :meth:`read` has frames or TLS bytes that the socket does not show."""
        sock = self.sock
        return bool(self._backlog) or (
            isinstance(sock, ssl.SSLSocket) and self.error is None and sock.pending() > 0
        )

    def filenos(self) -> tuple[int, ...]:
        """The socket's and the wakeup socket's descriptors (``()`` once disposed)."""
        ready = self._ready_or_woken
        return () if ready is None or self.sock is None else ready.fds

    def _lost(self, exc: OSError | None) -> ConnectionError:
        why = f": {exc}" if exc is not None else ""
        self.kill(ConnectionError(f"connection to {self.address} lost{why}"))
        return self.copy_error()

    def wake(self) -> None:
        """Make a :meth:`read` with ``wakeup=True`` return ``None`` now (or the next one)."""
        # OSError: the pipe is full (a wakeup is pending anyway) or closed
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def drain_wakeups(self) -> None:
        """Forget pending :meth:`wake` calls."""
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass

    # -- writing ---------------------------------------------------------------------------

    def send(self, data: bytes, what: str) -> None:
        """Write ``data`` whole, under the write lock. ``what`` names the operation for errors.

        Raises:
            ConnectionBlocked: the socket did not take the data within ``publish_timeout`` (the
                connection is dead afterwards: a frame may be half written).
            ConnectionError: the connection is dead or died now.
        """
        with self.write_lock:
            self.send_locked(data, what)

    def send_locked(self, data: bytes, what: str) -> None:
        """:meth:`send` for a caller that holds :attr:`write_lock`."""
        sock = self.sock
        if self.error is not None or sock is None:
            raise ConnectionError(f"cannot {what}: {self.error or 'not connected'}")
        try:
            sock.sendall(data)
        except TimeoutError:
            limit = sock.gettimeout()
            self.kill(
                ConnectionError(
                    f"connection to {self.address} broke: a write did not finish within {limit}s"
                )
            )
            raise ConnectionBlocked(
                f"cannot {what}: the socket did not take it within {limit}s (is the broker "
                "blocking this connection?)"
            ) from None
        except OSError as exc:
            self.kill(ConnectionError(f"connection to {self.address} lost: {exc}"))
            raise ConnectionError(f"cannot {what}: {self.error}") from exc
        self.last_sent = monotonic()

    # -- closing ---------------------------------------------------------------------------

    def copy_error(self) -> ConnectionError:
        """A fresh copy of :attr:`error` to raise (one instance is never raised twice)."""
        err = self.error or ConnectionError(f"connection to {self.address} is not open")
        return ConnectionError(str(err), err.reply_code, err.reply_text)

    def kill(self, error: ConnectionError) -> None:
        """Mark the connection dead (the first reason wins) and shut its socket down."""
        if self.error is None:
            self.error = error
        self._stop.set()
        sock = self.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def dispose(self) -> None:
        """Kill the connection and release its sockets."""
        self.kill(ConnectionError(f"connection to {self.address} was closed"))
        for sock in (self.sock, self._wake_r, self._wake_w):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()


def _words(value: Any) -> list[str]:
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", "replace")
    return str(value or "").split()


def _negotiate_heartbeat(client: float, server: int) -> int:
    """The smaller of two non-zero values, else the non-zero one; a client 0 disables them."""
    if not client:
        return 0
    ours = max(1, round(client))
    return min(ours, server) if server else ours


def _send_heartbeats(ref: weakref.ref[Connection], stop: threading.Event, idle: float) -> None:
    """Send a heartbeat whenever nothing was written for ``idle`` seconds, until ``stop``.

    Holds the connection only weakly, so a transport dropped without close() is collected.
    """
    while not stop.wait(idle / 2):
        conn = ref()
        if conn is None:
            return
        if monotonic() - conn.last_sent >= idle:
            try:
                conn.send(codec.HEARTBEAT_FRAME, "send a heartbeat")
            except TransportError as exc:
                logger.debug("heartbeat thread for %s stops: %s", conn.address, exc)
                return
        del conn
