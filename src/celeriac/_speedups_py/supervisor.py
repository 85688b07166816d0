"""Records between the prefork pool's parent and its children, and per-child bookkeeping.

Pure twin of ``_speedups/supervisor.pyx``: same names, same behaviour, same exceptions and
messages. Keep the two in step; ``tests/unit/test_supervisor.py`` checks they agree.

Parent to child, one record per job or control word (big-endian)::

    u32 length of what follows | u8 kind | u64 job id
    JOB only: u32 n | n bytes of AMQP basic properties (headers included, as the broker's
              table codec writes them) | u8 redelivered | u16 n | exchange | u16 n |
              routing key | body (the rest of the record, bytes as received)

Child to parent, fixed 33-byte records:
``u8 kind | u64 job id | u64 value | u64 rss KiB | u64 at``, where ``value`` is the pid
(HELLO, STARTED) or the ack decision (DONE), ``rss`` is 0 when the child did not measure it,
and ``at`` is when the record's event happened, in microseconds of the child's monotonic clock
(``time.monotonic()``, the same clock as the parent's): the parent may read records
milliseconds after the child wrote them, as the child writes them in batches.

Nothing is pickled: a task's message crosses the pipe in the form the broker sent it, and
the child decodes it with the same message decoder as the consumer. Mechanism only: it
returns values or raises ``ProtocolError``, and never logs.
"""

from __future__ import annotations

import struct
from typing import Any, Final

from celeriac._speedups_py.amqp_codec import decode_properties, encode_properties
from celeriac.errors import ProtocolError

__all__ = [
    "ACK",
    "COMPLETION_SIZE",
    "DONE",
    "HELLO",
    "JOB",
    "NO_DECISION",
    "REJECT",
    "REQUEUE",
    "STARTED",
    "STOP",
    "STOP_NOW",
    "ChildSlots",
    "Completion",
    "CompletionDecoder",
    "Job",
    "JobDecoder",
    "encode_completion",
    "encode_control",
    "encode_job",
]

JOB: Final = 1
"""A task to run."""
STOP: Final = 2
"""Exit once every job sent before this one is done."""
STOP_NOW: Final = 3
"""Exit after the job running now; jobs not started are left for the parent to re-send."""

HELLO: Final = 1
"""The child is up (value: pid, rss: its RSS at start)."""
STARTED: Final = 2
"""The child starts a job (value: pid, at: when it started)."""
DONE: Final = 3
"""The child finished a job (value: the ack decision, rss: its RSS after the job or 0, at:
when it finished)."""

ACK: Final = 0
REJECT: Final = 1
REQUEUE: Final = 2
NO_DECISION: Final = 3

COMPLETION_SIZE: Final = 33
MAX_RECORD: Final = 0x7FFFFFFF

Job = tuple[int, int, dict[str, Any], dict[Any, Any] | None, bytes, dict[str, Any]]
"""``(kind, job_id, properties, headers, body, delivery_info)``; controls carry empty parts."""
Completion = tuple[int, int, int, int, int]
"""``(kind, job_id, value, rss_kib, at_us)``."""

_HEAD = struct.Struct(">IBQ")
_U32 = struct.Struct(">I")
_U16 = struct.Struct(">H")
_COMPLETION = struct.Struct(">BQQQQ")
_U64_MAX: Final = 0xFFFFFFFFFFFFFFFF
_PROPERTY_NAMES: Final = (
    "content_type",
    "content_encoding",
    "correlation_id",
    "reply_to",
    "priority",
)


def _check_u64(name: str, value: Any) -> int:
    if type(value) is not int:
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not 0 <= value <= _U64_MAX:
        raise OverflowError(f"{name} {value} is out of range for an unsigned 64-bit field")
    return value


def _text(what: str, job_id: int, value: Any) -> bytes:
    raw = b"" if value is None else str(value).encode()
    if len(raw) > 0xFFFF:
        raise ProtocolError(f"cannot encode job {job_id}: {what} is {len(raw)} bytes, over 65535")
    return raw


def encode_job(job_id: int, message: Any) -> bytes:
    """One JOB record for ``message`` (a ``TaskMessage``: headers, properties, body as received).

    Raises:
        ProtocolError: a header or property the AMQP table codec cannot write.
        TypeError, OverflowError: ``job_id`` is not an unsigned 64-bit int.
    """
    _check_u64("job_id", job_id)
    properties = {}
    for name in _PROPERTY_NAMES:
        value = getattr(message, name)
        if value is not None:
            properties[name] = value
    try:
        props = encode_properties(properties, message.headers)
    except ProtocolError as exc:
        raise ProtocolError(f"cannot encode job {job_id}: {exc}") from None
    info = message.delivery_info or {}
    exchange = _text("exchange", job_id, info.get("exchange"))
    routing_key = _text("routing key", job_id, info.get("routing_key"))
    body = message.body
    if type(body) is not bytes:
        body = bytes(body)
    size = 1 + 8 + 4 + len(props) + 1 + 2 + len(exchange) + 2 + len(routing_key) + len(body)
    if size > MAX_RECORD:
        raise ProtocolError(f"cannot encode job {job_id}: record of {size} bytes is too large")
    return b"".join(
        (
            _HEAD.pack(size, JOB, job_id),
            _U32.pack(len(props)),
            props,
            b"\x01" if info.get("redelivered") else b"\x00",
            _U16.pack(len(exchange)),
            exchange,
            _U16.pack(len(routing_key)),
            routing_key,
            body,
        )
    )


def encode_control(kind: int) -> bytes:
    """A STOP or STOP_NOW record.

    Raises:
        ValueError: ``kind`` is not a control kind.
    """
    if kind != STOP and kind != STOP_NOW:
        raise ValueError(f"cannot encode control record: unknown kind {kind!r}")
    return _HEAD.pack(9, kind, 0)


def encode_completion(kind: int, job_id: int, value: int, rss: int, at: int = 0) -> bytes:
    """One child-to-parent record.

    Raises:
        ValueError: unknown ``kind``.
        TypeError, OverflowError: a number is not an unsigned 64-bit int.
    """
    if kind != HELLO and kind != STARTED and kind != DONE:
        raise ValueError(f"cannot encode completion record: unknown kind {kind!r}")
    return _COMPLETION.pack(
        kind,
        _check_u64("job_id", job_id),
        _check_u64("value", value),
        _check_u64("rss", rss),
        _check_u64("at", at),
    )


def _bad(offset: int, what: str) -> ProtocolError:
    return ProtocolError(f"cannot decode job record at offset {offset}: {what}")


def _job(buf: bytes, start: int, end: int) -> Job:
    kind = buf[start]
    job_id = int.from_bytes(buf[start + 1 : start + 9], "big")
    if kind in (STOP, STOP_NOW):
        if end != start + 9:
            raise _bad(start, f"control record of {end - start} bytes, expected 9")
        return (kind, job_id, {}, None, b"", {})
    if kind != JOB:
        raise _bad(start, f"unknown kind {kind}")
    off = start + 9
    if off + 4 > end:
        raise _bad(start, "truncated before the properties")
    (n,) = _U32.unpack_from(buf, off)
    off += 4
    if off + n + 1 + 2 > end:
        raise _bad(start, f"properties of {n} bytes overrun the record")
    try:
        properties, headers = decode_properties(buf[off : off + n])
    except ProtocolError as exc:
        raise _bad(start, str(exc)) from None
    off += n
    redelivered = buf[off] != 0
    off += 1
    (n,) = _U16.unpack_from(buf, off)
    off += 2
    if off + n + 2 > end:
        raise _bad(start, f"exchange of {n} bytes overruns the record")
    exchange = buf[off : off + n].decode()
    off += n
    (n,) = _U16.unpack_from(buf, off)
    off += 2
    if off + n > end:
        raise _bad(start, f"routing key of {n} bytes overruns the record")
    routing_key = buf[off : off + n].decode()
    off += n
    info = {"exchange": exchange, "routing_key": routing_key, "redelivered": redelivered}
    return (JOB, job_id, properties, headers, buf[off:end], info)


class JobDecoder:
    """Splits the child's input stream into :data:`Job` tuples; keeps partial records."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    @property
    def pending(self) -> int:
        """Bytes held from an incomplete record."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Job]:
        """Every complete record in what was held plus ``data``, in order.

        Raises:
            ProtocolError: a malformed record (the stream cannot be resynchronised after it).
        """
        buf = self._buf + data if self._buf else bytes(data)
        jobs: list[Job] = []
        off = 0
        end = len(buf)
        while off + 4 <= end:
            (size,) = _U32.unpack_from(buf, off)
            if size < 9 or size > MAX_RECORD:
                raise _bad(off, f"bad record length {size}")
            if off + 4 + size > end:
                break
            jobs.append(_job(buf, off + 4, off + 4 + size))
            off += 4 + size
        self._buf = buf[off:]
        return jobs


class CompletionDecoder:
    """Splits the parent's input stream from one child into :data:`Completion` tuples."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    @property
    def pending(self) -> int:
        """Bytes held from an incomplete record."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Completion]:
        """Every complete record in what was held plus ``data``, in order.

        Raises:
            ProtocolError: an unknown record kind.
        """
        buf = self._buf + data if self._buf else bytes(data)
        out: list[Completion] = []
        off = 0
        end = len(buf) - COMPLETION_SIZE
        while off <= end:
            record = _COMPLETION.unpack_from(buf, off)
            kind = record[0]
            if kind != HELLO and kind != STARTED and kind != DONE:
                raise ProtocolError(
                    f"cannot decode completion record at offset {off}: unknown kind {kind}"
                )
            out.append(record)
            off += COMPLETION_SIZE
        self._buf = buf[off:]
        return out


class ChildSlots:
    """The jobs one child holds, in the order it runs them, and when the current one started.

    A child runs its jobs first in, first out, so only the oldest can be running.
    """

    __slots__ = ("_jobs", "_running", "_started_at", "_tasks_done", "_tasks_sent")

    def __init__(self) -> None:
        self._jobs: list[int] = []
        self._running = 0
        self._started_at = 0.0
        self._tasks_sent = 0
        self._tasks_done = 0

    @property
    def inflight(self) -> int:
        """Jobs sent and not done (the running one included)."""
        return len(self._jobs)

    @property
    def running(self) -> int:
        """The job running now, 0 when none."""
        return self._running

    @property
    def started_at(self) -> float:
        """When the running job started (the caller's clock), 0.0 when none."""
        return self._started_at

    @property
    def tasks_sent(self) -> int:
        return self._tasks_sent

    @property
    def tasks_done(self) -> int:
        return self._tasks_done

    def sent(self, job_id: int) -> None:
        """``job_id`` was queued to this child."""
        if type(job_id) is not int or job_id <= 0:
            raise ValueError(f"job id must be a positive int, not {job_id!r}")
        self._jobs.append(job_id)
        self._tasks_sent += 1

    def started(self, job_id: int, now: float) -> bool:
        """The child started ``job_id``; False if it is not this child's next job."""
        jobs = self._jobs
        if not jobs or jobs[0] != job_id or self._running == job_id:
            return False
        self._running = job_id
        self._started_at = now
        return True

    def done(self, job_id: int) -> bool:
        """The child finished ``job_id``; False if it is not this child's oldest job."""
        jobs = self._jobs
        if not jobs or jobs[0] != job_id:
            return False
        del jobs[0]
        self._running = 0
        self._started_at = 0.0
        self._tasks_done += 1
        return True

    def unstarted(self) -> list[int]:
        """Jobs sent and not started yet, oldest first."""
        jobs = self._jobs
        return jobs[1:] if jobs and jobs[0] == self._running else list(jobs)

    def clear(self) -> list[int]:
        """Forget every job (the child is gone); return the ones that had not started."""
        left = self.unstarted()
        self._jobs = []
        self._running = 0
        self._started_at = 0.0
        return left
