# cython: language_level=3
"""Records between the prefork pool's parent and its children, and per-child bookkeeping.

Compiled twin of ``celeriac/_speedups_py/supervisor.py``, which is the reference and the type
source (read its module docstring for the record layout): same names, same behaviour, same
exceptions and messages. Keep the two in step; ``tests/unit/test_supervisor.py`` checks they
agree. Never log from here.
"""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy

from bigendian cimport load_u16, load_u32, load_u64, store_u16, store_u32, store_u64

from celeriac._speedups.amqp_codec import decode_properties, encode_properties
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

JOB = 1
STOP = 2
STOP_NOW = 3
HELLO = 1
STARTED = 2
DONE = 3
ACK = 0
REJECT = 1
REQUEUE = 2
NO_DECISION = 3
COMPLETION_SIZE = 33
MAX_RECORD = 0x7FFFFFFF

Job = tuple
Completion = tuple

cdef enum:
    _JOB = 1
    _STOP = 2
    _STOP_NOW = 3
    _HELLO = 1
    _STARTED = 2
    _DONE = 3
    _CSIZE = 33
    _MAX_RECORD = 0x7FFFFFFF

cdef object _U64_MAX = 0xFFFFFFFFFFFFFFFF
cdef tuple _PROPERTY_NAMES = (
    "content_type",
    "content_encoding",
    "correlation_id",
    "reply_to",
    "priority",
)
cdef dict _EMPTY_INFO_PROTO = {}


cdef uint64_t _check_u64(str name, object value) except? 0:
    if type(value) is not int:
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not 0 <= value <= _U64_MAX:
        raise OverflowError(f"{name} {value} is out of range for an unsigned 64-bit field")
    return <uint64_t>value


cdef bytes _text(str what, object job_id, object value):
    cdef bytes raw = b"" if value is None else str(value).encode()
    if len(raw) > 0xFFFF:
        raise ProtocolError(f"cannot encode job {job_id}: {what} is {len(raw)} bytes, over 65535")
    return raw


def encode_job(job_id, message):
    """One JOB record for ``message`` (a ``TaskMessage``: headers, properties, body as received)."""
    cdef uint64_t jid = _check_u64("job_id", job_id)
    cdef dict properties = {}
    cdef str name
    for name in _PROPERTY_NAMES:
        value = getattr(message, name)
        if value is not None:
            properties[name] = value
    cdef bytes props
    try:
        props = encode_properties(properties, message.headers)
    except ProtocolError as exc:
        raise ProtocolError(f"cannot encode job {job_id}: {exc}") from None
    info = message.delivery_info or {}
    cdef bytes exchange = _text("exchange", job_id, info.get("exchange"))
    cdef bytes routing_key = _text("routing key", job_id, info.get("routing_key"))
    body = message.body
    if type(body) is not bytes:
        body = bytes(body)
    cdef bytes b = <bytes>body
    cdef Py_ssize_t np = PyBytes_GET_SIZE(props)
    cdef Py_ssize_t ne = PyBytes_GET_SIZE(exchange)
    cdef Py_ssize_t nr = PyBytes_GET_SIZE(routing_key)
    cdef Py_ssize_t nb = PyBytes_GET_SIZE(b)
    cdef Py_ssize_t size = 1 + 8 + 4 + np + 1 + 2 + ne + 2 + nr + nb
    if size > _MAX_RECORD:
        raise ProtocolError(f"cannot encode job {job_id}: record of {size} bytes is too large")
    cdef bytes out = PyBytes_FromStringAndSize(NULL, size + 4)
    cdef unsigned char* p = <unsigned char*>PyBytes_AS_STRING(out)
    store_u32(p, <uint32_t>size)
    p[4] = _JOB
    store_u64(p + 5, jid)
    p += 13
    store_u32(p, <uint32_t>np)
    p += 4
    memcpy(p, PyBytes_AS_STRING(props), np)
    p += np
    p[0] = 1 if info.get("redelivered") else 0
    p += 1
    store_u16(p, <uint16_t>ne)
    p += 2
    memcpy(p, PyBytes_AS_STRING(exchange), ne)
    p += ne
    store_u16(p, <uint16_t>nr)
    p += 2
    memcpy(p, PyBytes_AS_STRING(routing_key), nr)
    p += nr
    memcpy(p, PyBytes_AS_STRING(b), nb)
    return out


def encode_control(kind):
    """A STOP or STOP_NOW record."""
    if kind != _STOP and kind != _STOP_NOW:
        raise ValueError(f"cannot encode control record: unknown kind {kind!r}")
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 13)
    cdef unsigned char* p = <unsigned char*>PyBytes_AS_STRING(out)
    store_u32(p, 9)
    p[4] = <unsigned char>(<int>kind)
    store_u64(p + 5, 0)
    return out


def encode_completion(kind, job_id, value, rss, at=0):
    """One child-to-parent record."""
    if kind != _HELLO and kind != _STARTED and kind != _DONE:
        raise ValueError(f"cannot encode completion record: unknown kind {kind!r}")
    cdef uint64_t j = _check_u64("job_id", job_id)
    cdef uint64_t v = _check_u64("value", value)
    cdef uint64_t r = _check_u64("rss", rss)
    cdef uint64_t t = _check_u64("at", at)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, _CSIZE)
    cdef unsigned char* p = <unsigned char*>PyBytes_AS_STRING(out)
    p[0] = <unsigned char>(<int>kind)
    store_u64(p + 1, j)
    store_u64(p + 9, v)
    store_u64(p + 17, r)
    store_u64(p + 25, t)
    return out


cdef object _bad(Py_ssize_t offset, str what):
    return ProtocolError(f"cannot decode job record at offset {offset}: {what}")


cdef tuple _job(bytes buf, Py_ssize_t start, Py_ssize_t end):
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(buf)
    cdef int kind = p[start]
    job_id = load_u64(p + start + 1)
    if kind == _STOP or kind == _STOP_NOW:
        if end != start + 9:
            raise _bad(start, f"control record of {end - start} bytes, expected 9")
        return (kind, job_id, {}, None, b"", {})
    if kind != _JOB:
        raise _bad(start, f"unknown kind {kind}")
    cdef Py_ssize_t off = start + 9
    if off + 4 > end:
        raise _bad(start, "truncated before the properties")
    cdef Py_ssize_t n = load_u32(p + off)
    off += 4
    if off + n + 1 + 2 > end:
        raise _bad(start, f"properties of {n} bytes overrun the record")
    try:
        properties, headers = decode_properties(buf[off:off + n])
    except ProtocolError as exc:
        raise _bad(start, str(exc)) from None
    off += n
    redelivered = p[off] != 0
    off += 1
    n = load_u16(p + off)
    off += 2
    if off + n + 2 > end:
        raise _bad(start, f"exchange of {n} bytes overruns the record")
    exchange = buf[off:off + n].decode()
    off += n
    n = load_u16(p + off)
    off += 2
    if off + n > end:
        raise _bad(start, f"routing key of {n} bytes overruns the record")
    routing_key = buf[off:off + n].decode()
    off += n
    info = {"exchange": exchange, "routing_key": routing_key, "redelivered": redelivered}
    return (_JOB, job_id, properties, headers, buf[off:end], info)


@cython.final
cdef class JobDecoder:
    """Splits the child's input stream into ``Job`` tuples; keeps partial records."""

    cdef bytes _buf

    def __init__(self):
        self._buf = b""

    @property
    def pending(self):
        """Bytes held from an incomplete record."""
        return PyBytes_GET_SIZE(self._buf)

    def feed(self, data):
        """Every complete record in what was held plus ``data``, in order."""
        cdef bytes buf = self._buf + data if PyBytes_GET_SIZE(self._buf) else bytes(data)
        cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(buf)
        cdef list jobs = []
        cdef Py_ssize_t off = 0
        cdef Py_ssize_t end = PyBytes_GET_SIZE(buf)
        cdef uint32_t size
        while off + 4 <= end:
            size = load_u32(p + off)
            if size < 9 or size > _MAX_RECORD:
                raise _bad(off, f"bad record length {size}")
            if off + 4 + <Py_ssize_t>size > end:
                break
            jobs.append(_job(buf, off + 4, off + 4 + size))
            off += 4 + size
        self._buf = buf[off:] if off else buf
        return jobs


@cython.final
cdef class CompletionDecoder:
    """Splits the parent's input stream from one child into ``Completion`` tuples."""

    cdef bytes _buf

    def __init__(self):
        self._buf = b""

    @property
    def pending(self):
        """Bytes held from an incomplete record."""
        return PyBytes_GET_SIZE(self._buf)

    def feed(self, data):
        """Every complete record in what was held plus ``data``, in order."""
        cdef bytes buf = self._buf + data if PyBytes_GET_SIZE(self._buf) else bytes(data)
        cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(buf)
        cdef list out = []
        cdef Py_ssize_t off = 0
        cdef Py_ssize_t end = PyBytes_GET_SIZE(buf) - _CSIZE
        cdef int kind
        while off <= end:
            kind = p[off]
            if kind != _HELLO and kind != _STARTED and kind != _DONE:
                raise ProtocolError(
                    f"cannot decode completion record at offset {off}: unknown kind {kind}"
                )
            out.append((kind, load_u64(p + off + 1), load_u64(p + off + 9),
                        load_u64(p + off + 17), load_u64(p + off + 25)))
            off += _CSIZE
        self._buf = buf[off:] if off else buf
        return out


@cython.final
cdef class ChildSlots:
    """The jobs one child holds, in the order it runs them, and when the current one started."""

    cdef list _jobs
    cdef object _running
    cdef double _started_at
    cdef Py_ssize_t _tasks_sent
    cdef Py_ssize_t _tasks_done

    def __init__(self):
        self._jobs = []
        self._running = 0
        self._started_at = 0.0
        self._tasks_sent = 0
        self._tasks_done = 0

    @property
    def inflight(self):
        """Jobs sent and not done (the running one included)."""
        return len(self._jobs)

    @property
    def running(self):
        """The job running now, 0 when none."""
        return self._running

    @property
    def started_at(self):
        """When the running job started (the caller's clock), 0.0 when none."""
        return self._started_at

    @property
    def tasks_sent(self):
        return self._tasks_sent

    @property
    def tasks_done(self):
        return self._tasks_done

    def sent(self, job_id):
        """``job_id`` was queued to this child."""
        if type(job_id) is not int or job_id <= 0:
            raise ValueError(f"job id must be a positive int, not {job_id!r}")
        self._jobs.append(job_id)
        self._tasks_sent += 1

    def started(self, job_id, double now):
        """The child started ``job_id``; False if it is not this child's next job."""
        cdef list jobs = self._jobs
        if not jobs or jobs[0] != job_id or self._running == job_id:
            return False
        self._running = job_id
        self._started_at = now
        return True

    def done(self, job_id):
        """The child finished ``job_id``; False if it is not this child's oldest job."""
        cdef list jobs = self._jobs
        if not jobs or jobs[0] != job_id:
            return False
        del jobs[0]
        self._running = 0
        self._started_at = 0.0
        self._tasks_done += 1
        return True

    def unstarted(self):
        """Jobs sent and not started yet, oldest first."""
        cdef list jobs = self._jobs
        return jobs[1:] if jobs and jobs[0] == self._running else list(jobs)

    def clear(self):
        """Forget every job (the child is gone); return the ones that had not started."""
        left = self.unstarted()
        self._jobs = []
        self._running = 0
        self._started_at = 0.0
        return left
