# cython: language_level=3
"""Encode and decode AMQP 0-9-1: frames, methods, field tables and basic properties.

Compiled twin of ``celeriac/_speedups_py/amqp_codec.py``, which is the reference and the type
source: same names, same behaviour, same exceptions and messages. Keep the two in step;
``tests/unit/test_amqp_codec_agreement.py`` checks they agree. The constants, the method and
property tables and the cold helpers (Decimal and datetime encoding, error formatting) are
imported from the twin, so both read one definition of the wire layout.

Reads go through raw pointers with a bounds check before each load; the only Python objects
built are the decoded values themselves. Never log from here.
"""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItem, PyDict_SetItem
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.ref cimport Py_DECREF, Py_INCREF, PyObject
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from cpython.unicode cimport PyUnicode_AsUTF8AndSize, PyUnicode_DecodeUTF8
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy

cdef extern from "Python.h":
    bint PyUnicode_IS_COMPACT_ASCII(object text)
    void* PyUnicode_DATA(object text)

from bigendian cimport (
    load_f32, load_f64, load_u16, load_u32, load_u64,
    store_f64, store_u16, store_u32, store_u64,
)

from collections.abc import Mapping
from datetime import datetime, timedelta
from decimal import Decimal

from celeriac.errors import ProtocolError
from celeriac.transports.base import Delivery
from celeriac._speedups_py import amqp_codec as _twin
from celeriac._speedups_py.amqp_codec import (
    BASIC_ACK, BASIC_CANCEL, BASIC_CANCEL_OK, BASIC_CONSUME, BASIC_CONSUME_OK, BASIC_DELIVER,
    BASIC_GET, BASIC_GET_EMPTY, BASIC_GET_OK, BASIC_NACK, BASIC_PUBLISH, BASIC_QOS,
    BASIC_QOS_OK, BASIC_RECOVER, BASIC_RECOVER_ASYNC, BASIC_RECOVER_OK, BASIC_REJECT,
    BASIC_RETURN, CHANNEL_CLOSE, CHANNEL_CLOSE_OK, CHANNEL_FLOW, CHANNEL_FLOW_OK, CHANNEL_OPEN,
    CHANNEL_OPEN_OK, CONFIRM_SELECT, CONFIRM_SELECT_OK, CONNECTION_BLOCKED, CONNECTION_CLOSE,
    CONNECTION_CLOSE_OK, CONNECTION_OPEN, CONNECTION_OPEN_OK, CONNECTION_SECURE,
    CONNECTION_SECURE_OK, CONNECTION_START, CONNECTION_START_OK, CONNECTION_TUNE,
    CONNECTION_TUNE_OK, CONNECTION_UNBLOCKED, EXCHANGE_DECLARE, EXCHANGE_DECLARE_OK,
    EXCHANGE_DELETE, EXCHANGE_DELETE_OK, FRAME_BODY, FRAME_END, FRAME_HEADER, FRAME_HEARTBEAT,
    FRAME_METHOD, FRAME_MIN_SIZE, HEARTBEAT, HEARTBEAT_FRAME, MAX_TABLE_DEPTH, METHOD_NAMES,
    PROTOCOL_HEADER, QUEUE_BIND, QUEUE_BIND_OK, QUEUE_DECLARE, QUEUE_DECLARE_OK, QUEUE_DELETE,
    QUEUE_DELETE_OK, QUEUE_PURGE, QUEUE_PURGE_OK, QUEUE_UNBIND, QUEUE_UNBIND_OK, Event,
)

__all__ = _twin.__all__

cdef enum:
    _DEPTH = 100  # MAX_TABLE_DEPTH; checked against the twin below
    _M_DELIVER = 60 << 16 | 60
    _M_GET_OK = 60 << 16 | 71
    _M_RETURN = 60 << 16 | 50
    _M_PUBLISH = 60 << 16 | 40

if MAX_TABLE_DEPTH != _DEPTH or BASIC_DELIVER != _M_DELIVER:
    raise ImportError("celeriac._speedups.amqp_codec is out of step with its pure twin")

cdef object _ProtocolError = ProtocolError
cdef object _Delivery = Delivery
cdef object _Decimal = Decimal
cdef object _Mapping = Mapping
cdef object _datetime = datetime
cdef object _timedelta = timedelta
cdef object _EPOCH = _twin._EPOCH
cdef object _HEARTBEAT = HEARTBEAT
cdef object _vrepr = _twin._vrepr
cdef object _decimal_parts = _twin._decimal_parts
cdef object _timestamp = _twin._timestamp
cdef object _check_frame_max = _twin._check_frame_max
cdef dict _FRAME_KINDS = _twin._FRAME_KINDS
cdef dict _INT_NAMES = _twin._INT_NAMES
cdef dict _METHOD_NAMES = METHOD_NAMES

# method id -> (name, argument codes as bytes, field names); codes as in the twin's _METHODS
cdef dict _SPECS = {
    method: (name, codes.encode(), fields) for method, (name, codes, fields) in _twin._METHODS.items()
}
cdef tuple _PROP_NAMES = tuple(name for name, _, _ in _twin._PROPERTIES)
cdef bytes _PROP_CODES = "".join(code for _, code, _ in _twin._PROPERTIES).encode()
cdef tuple _PROP_FLAGS = tuple(flag for _, _, flag in _twin._PROPERTIES)
cdef int _NPROPS = len(_PROP_NAMES)
cdef uint16_t _UNKNOWN_FLAGS = _twin._UNKNOWN_FLAGS


# -- errors ----------------------------------------------------------------------------------


cdef object _truncated(str what, Py_ssize_t off, Py_ssize_t need, Py_ssize_t end):
    return _ProtocolError(
        f"truncated {what} at offset {off}: needs {need} bytes, {end - off} left"
    )


cdef object _too_deep(Py_ssize_t off):
    return _ProtocolError(
        f"field tables nested deeper than {MAX_TABLE_DEPTH} levels at offset {off}"
    )


# -- the write buffer ------------------------------------------------------------------------


@cython.final
@cython.freelist(8)
cdef class _Writer:
    """A growable byte buffer; small outputs stay in the object itself."""

    cdef unsigned char* buf
    cdef Py_ssize_t size
    cdef Py_ssize_t cap
    cdef unsigned char small[1024]

    def __cinit__(self):
        self.buf = self.small
        self.size = 0
        self.cap = 1024

    def __dealloc__(self):
        if self.buf != self.small:
            PyMem_Free(self.buf)

    cdef int grow(self, Py_ssize_t extra) except -1:
        cdef Py_ssize_t cap = self.cap * 2
        cdef unsigned char* buf
        while cap < self.size + extra:
            cap *= 2
        if self.buf == self.small:
            buf = <unsigned char*>PyMem_Malloc(cap)
            if buf is NULL:
                raise MemoryError()
            memcpy(buf, self.buf, self.size)
        else:
            buf = <unsigned char*>PyMem_Realloc(self.buf, cap)
            if buf is NULL:
                raise MemoryError()
        self.buf = buf
        self.cap = cap
        return 0

    cdef inline int reserve(self, Py_ssize_t n) except -1:
        if self.size + n > self.cap:
            self.grow(n)
        return 0

    cdef inline int u8(self, unsigned char v) except -1:
        if self.size + 1 > self.cap:
            self.grow(1)
        self.buf[self.size] = v
        self.size += 1
        return 0

    cdef inline int u16(self, uint16_t v) except -1:
        if self.size + 2 > self.cap:
            self.grow(2)
        store_u16(self.buf + self.size, v)
        self.size += 2
        return 0

    cdef inline int u32(self, uint32_t v) except -1:
        if self.size + 4 > self.cap:
            self.grow(4)
        store_u32(self.buf + self.size, v)
        self.size += 4
        return 0

    cdef inline int u64(self, uint64_t v) except -1:
        if self.size + 8 > self.cap:
            self.grow(8)
        store_u64(self.buf + self.size, v)
        self.size += 8
        return 0

    cdef inline int raw(self, const char* p, Py_ssize_t n) except -1:
        if self.size + n > self.cap:
            self.grow(n)
        memcpy(self.buf + self.size, p, n)
        self.size += n
        return 0

    cdef inline bytes tobytes(self):
        return PyBytes_FromStringAndSize(<char*>self.buf, self.size)


cdef inline _Writer _writer():
    return _Writer.__new__(_Writer)


# -- field tables: decoding -------------------------------------------------------------------


cdef inline object _text_or_bytes(const unsigned char* p, Py_ssize_t n):
    try:
        return PyUnicode_DecodeUTF8(<const char*>p, n, NULL)
    except UnicodeDecodeError:
        return PyBytes_FromStringAndSize(<const char*>p, n)


# Field names repeat from message to message (Celery's 19 headers), so ASCII names up to
# _KEY_MAX bytes are kept in a small direct-mapped cache of str objects whose hash is already
# computed: a hit skips decoding, allocating and hashing the name (measured: ~40% of the time
# spent reading Celery's headers).
cdef enum:
    _KEY_SLOTS = 512
    _KEY_MAX = 48

cdef struct _KeySlot:
    PyObject* text
    Py_ssize_t size

cdef _KeySlot _keys[_KEY_SLOTS]


cdef inline object _field_name(const unsigned char* p, Py_ssize_t n):
    cdef uint32_t h = 2166136261
    cdef Py_ssize_t i
    cdef _KeySlot* slot
    cdef object text
    if n > _KEY_MAX:
        return _text_or_bytes(p, n)
    for i in range(n):
        h = (h ^ p[i]) * 16777619
    slot = &_keys[h & (_KEY_SLOTS - 1)]
    if (
        slot.text is not NULL
        and slot.size == n
        and memcmp(PyUnicode_DATA(<object>slot.text), p, n) == 0
    ):
        return <object>slot.text
    text = _text_or_bytes(p, n)
    if type(text) is str and PyUnicode_IS_COMPACT_ASCII(text):
        hash(text)
        Py_INCREF(text)
        if slot.text is not NULL:
            Py_DECREF(<object>slot.text)
        slot.text = <PyObject*>text
        slot.size = n
    return text


cdef dict _read_table(const unsigned char* p, Py_ssize_t* poff, Py_ssize_t end, int depth):
    cdef Py_ssize_t off = poff[0]
    cdef Py_ssize_t limit, klen
    cdef uint32_t size
    cdef dict table
    cdef object key, value
    if depth > _DEPTH:
        raise _too_deep(off)
    if off + 4 > end:
        raise _truncated("field table", off, 4, end)
    size = load_u32(p + off)
    off += 4
    limit = off + size
    if limit > end:
        raise _ProtocolError(
            f"field table at offset {off - 4} declares {size} bytes, only {end - off} left"
        )
    table = {}
    while off < limit:
        klen = p[off]
        off += 1
        if off + klen > limit:
            raise _truncated("field name", off, klen, limit)
        key = _field_name(p + off, klen)
        off += klen
        value = _read_value(p, &off, limit, depth)
        PyDict_SetItem(table, key, value)
    poff[0] = off
    return table


cdef list _read_array(const unsigned char* p, Py_ssize_t* poff, Py_ssize_t end, int depth):
    cdef Py_ssize_t off = poff[0]
    cdef Py_ssize_t limit
    cdef uint32_t size
    cdef list items
    if depth > _DEPTH:
        raise _too_deep(off)
    if off + 4 > end:
        raise _truncated("field array", off, 4, end)
    size = load_u32(p + off)
    off += 4
    limit = off + size
    if limit > end:
        raise _ProtocolError(
            f"field array at offset {off - 4} declares {size} bytes, only {end - off} left"
        )
    items = []
    while off < limit:
        items.append(_read_value(p, &off, limit, depth))
    poff[0] = off
    return items


cdef object _read_value(const unsigned char* p, Py_ssize_t* poff, Py_ssize_t end, int depth):
    cdef Py_ssize_t off = poff[0]
    cdef unsigned char tag
    cdef uint32_t size
    cdef uint64_t seconds
    cdef int32_t unscaled
    cdef int scale
    cdef object value
    if off >= end:
        raise _truncated("field value", off, 1, end)
    tag = p[off]
    off += 1
    if tag == c'S':
        if off + 4 > end:
            raise _truncated("longstr", off, 4, end)
        size = load_u32(p + off)
        off += 4
        if off + size > end:
            raise _truncated("longstr", off, size, end)
        value = _text_or_bytes(p + off, size)
        off += size
    elif tag == c'I':
        if off + 4 > end:
            raise _truncated("long", off, 4, end)
        value = <int32_t>load_u32(p + off)
        off += 4
    elif tag == c't':
        if off + 1 > end:
            raise _truncated("boolean", off, 1, end)
        value = p[off] != 0
        off += 1
    elif tag == c'V':
        value = None
    elif tag == c'F':
        poff[0] = off
        return _read_table(p, poff, end, depth + 1)
    elif tag == c'A':
        poff[0] = off
        return _read_array(p, poff, end, depth + 1)
    elif tag == c'd':
        if off + 8 > end:
            raise _truncated("double", off, 8, end)
        value = load_f64(p + off)
        off += 8
    elif tag == c'l' or tag == c'L':
        if off + 8 > end:
            raise _truncated("longlong", off, 8, end)
        value = <int64_t>load_u64(p + off)
        off += 8
    elif tag == c'b':
        if off + 1 > end:
            raise _truncated("octet", off, 1, end)
        value = <int8_t>p[off]
        off += 1
    elif tag == c'B':
        if off + 1 > end:
            raise _truncated("octet", off, 1, end)
        value = p[off]
        off += 1
    elif tag == c's' or tag == c'U':
        if off + 2 > end:
            raise _truncated("short", off, 2, end)
        value = <int16_t>load_u16(p + off)
        off += 2
    elif tag == c'u':
        if off + 2 > end:
            raise _truncated("short", off, 2, end)
        value = load_u16(p + off)
        off += 2
    elif tag == c'i':
        if off + 4 > end:
            raise _truncated("long", off, 4, end)
        value = load_u32(p + off)
        off += 4
    elif tag == c'f':
        if off + 4 > end:
            raise _truncated("float", off, 4, end)
        value = load_f32(p + off)
        off += 4
    elif tag == c'D':
        if off + 5 > end:
            raise _truncated("decimal", off, 5, end)
        unscaled = <int32_t>load_u32(p + off + 1)
        scale = p[off]
        value = _Decimal(f"{unscaled}E-{scale}")
        off += 5
    elif tag == c'T':
        if off + 8 > end:
            raise _truncated("timestamp", off, 8, end)
        seconds = load_u64(p + off)
        try:
            value = _EPOCH + _timedelta(seconds=seconds)
        except OverflowError:
            raise _ProtocolError(f"timestamp {seconds} out of range at offset {off}") from None
        off += 8
    elif tag == c'x':
        if off + 4 > end:
            raise _truncated("byte array", off, 4, end)
        size = load_u32(p + off)
        off += 4
        if off + size > end:
            raise _truncated("byte array", off, size, end)
        value = PyBytes_FromStringAndSize(<const char*>p + off, size)
        off += size
    else:
        raise _ProtocolError(f"unknown field value type 0x{tag:02x} at offset {off - 1}")
    poff[0] = off
    return value


cdef inline bytes _as_bytes(object data):
    if type(data) is bytes:
        return <bytes>data
    return bytes(data)


def decode_table(data):
    """Decode one field table, its u32 length prefix included; nothing may follow it.

    Raises:
        ProtocolError: truncated or malformed data, an unknown value type, or trailing bytes.
    """
    cdef bytes buf = _as_bytes(data)
    cdef Py_ssize_t off = 0
    cdef Py_ssize_t n = PyBytes_GET_SIZE(buf)
    cdef dict table
    try:
        table = _read_table(<const unsigned char*>PyBytes_AS_STRING(buf), &off, n, 1)
    except ProtocolError as exc:
        raise _ProtocolError(f"cannot decode field table: {exc}") from None
    if off != n:
        raise _ProtocolError(
            f"cannot decode field table: {n - off} unexpected bytes after it at offset {off}"
        )
    return table


# -- field tables: encoding -------------------------------------------------------------------


cdef str _describe(int kind, object a, object b):
    """What an encoding error is about; built only when there is an error."""
    if kind == 0:
        return f"the value for key {_vrepr(a)}"
    if kind == 1:
        return f"{a} argument {b}"
    if kind == 2:
        return f"property {a}"
    return a


cdef int _write_text(_Writer w, object value, bint is_short, int kind, object a, object b) except -1:
    """Write a str as shortstr (``is_short``) or longstr; ``kind, a, b`` name it in errors."""
    cdef const char* s
    cdef Py_ssize_t n
    try:
        s = PyUnicode_AsUTF8AndSize(value, &n)
    except UnicodeEncodeError:
        raise _ProtocolError(
            f"cannot encode {_describe(kind, a, b)}: not encodable as utf-8"
        ) from None
    if is_short:
        if n > 255:
            raise _ProtocolError(
                f"cannot encode {_describe(kind, a, b)}: {n} bytes, over the shortstr limit "
                f"of 255"
            )
        w.u8(<unsigned char>n)
    else:
        w.u32(<uint32_t>n)
    w.raw(s, n)
    return 0


cdef int _write_table(_Writer w, object table, int depth) except -1:
    cdef Py_ssize_t start, n
    cdef const char* s
    cdef object key, value
    if depth > _DEPTH:
        raise _ProtocolError(f"cannot encode field tables nested deeper than {MAX_TABLE_DEPTH}")
    start = w.size
    w.u32(0)
    items = (<dict>table).items() if type(table) is dict else table.items()
    for key, value in items:
        if type(key) is str or isinstance(key, str):
            try:
                s = PyUnicode_AsUTF8AndSize(key, &n)
            except UnicodeEncodeError:
                raise _ProtocolError(
                    f"cannot encode field name {_vrepr(key)}: not encodable as utf-8"
                ) from None
        elif isinstance(key, bytes):
            s = PyBytes_AS_STRING(key)
            n = PyBytes_GET_SIZE(key)
        else:
            raise _ProtocolError(
                f"cannot encode field name {_vrepr(key)}: {type(key).__name__}, not str"
            )
        if n > 255:
            raise _ProtocolError(
                f"cannot encode field name {_vrepr(key)}: {n} bytes, over the "
                f"shortstr limit of 255"
            )
        w.u8(<unsigned char>n)
        w.raw(s, n)
        _write_value(w, value, key, depth)
    store_u32(w.buf + start, <uint32_t>(w.size - start - 4))
    return 0


cdef int _write_array(_Writer w, object items, object key, int depth) except -1:
    cdef Py_ssize_t start
    if depth > _DEPTH:
        raise _ProtocolError(f"cannot encode field tables nested deeper than {MAX_TABLE_DEPTH}")
    start = w.size
    w.u32(0)
    for value in items:
        _write_value(w, value, key, depth)
    store_u32(w.buf + start, <uint32_t>(w.size - start - 4))
    return 0


cdef int _write_int(_Writer w, object value, object key) except -1:
    cdef long long v
    try:
        v = value
    except OverflowError:
        v = 0
        _int_range(value, key)
    if -2147483647 <= v <= 2147483647:
        w.u8(c'I')
        w.u32(<uint32_t><int32_t>v)
    else:
        w.u8(c'L')
        w.u64(<uint64_t>v)
    return 0


cdef int _int_range(object value, object key) except -1:
    raise _ProtocolError(
        f"cannot encode int {_vrepr(value)} for key {_vrepr(key)}: outside the signed "
        f"64-bit range"
    )


cdef int _write_value(_Writer w, object value, object key, int depth) except -1:
    cdef object kind = type(value)
    if kind is str:
        w.u8(c'S')
        _write_text(w, value, False, 0, key, None)
    elif kind is bool:
        w.u8(c't')
        w.u8(1 if value is True else 0)
    elif kind is int:
        _write_int(w, value, key)
    elif value is None:
        w.u8(c'V')
    elif kind is dict:
        w.u8(c'F')
        _write_table(w, value, depth + 1)
    elif kind is list or kind is tuple:
        w.u8(c'A')
        _write_array(w, value, key, depth + 1)
    elif kind is float:
        w.u8(c'd')
        w.reserve(8)
        store_f64(w.buf + w.size, <double>value)
        w.size += 8
    elif kind is bytes:
        w.u8(c'S')
        w.u32(<uint32_t>PyBytes_GET_SIZE(value))
        w.raw(PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value))
    else:
        _write_other(w, value, key, depth)
    return 0


cdef int _write_other(_Writer w, object value, object key, int depth) except -1:
    """Subclasses of the plain types, Decimal, datetime and other mappings."""
    if isinstance(value, str):
        w.u8(c'S')
        _write_text(w, value, False, 0, key, None)
    elif isinstance(value, bytes):
        w.u8(c'S')
        w.u32(<uint32_t>PyBytes_GET_SIZE(value))
        w.raw(PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value))
    elif isinstance(value, int):
        _write_int(w, int(value), key)
    elif isinstance(value, float):
        w.u8(c'd')
        w.reserve(8)
        store_f64(w.buf + w.size, <double>value)
        w.size += 8
    elif isinstance(value, _Decimal):
        scale, unscaled = _decimal_parts(value, key)
        w.u8(c'D')
        w.u8(<unsigned char>scale)
        w.u32(<uint32_t><int32_t>unscaled)
    elif isinstance(value, _datetime):
        w.u8(c'T')
        w.u64(<uint64_t>_timestamp(value, key))
    elif isinstance(value, _Mapping):
        w.u8(c'F')
        _write_table(w, value, depth + 1)
    elif isinstance(value, (list, tuple)):
        w.u8(c'A')
        _write_array(w, value, key, depth + 1)
    else:
        raise _ProtocolError(
            f"cannot encode a value of type {type(value).__name__} for key {_vrepr(key)}: "
            f"field tables take str, bytes, bool, int, float, Decimal, datetime, dict, "
            f"list, tuple or None"
        )
    return 0


def encode_table(table):
    """Encode a field table with its u32 length prefix (``None`` is the empty table).

    Raises:
        ProtocolError: a key or value that AMQP cannot carry; the message names the key.
    """
    cdef _Writer w = _writer()
    _write_table(w, {} if table is None else table, 1)
    return w.tobytes()


# -- method arguments -------------------------------------------------------------------------


cdef object _read_shortstr(const unsigned char* p, Py_ssize_t* poff, Py_ssize_t end):
    cdef Py_ssize_t off = poff[0]
    cdef Py_ssize_t size
    cdef object text
    if off >= end:
        raise _truncated("shortstr", off, 1, end)
    size = p[off]
    off += 1
    if off + size > end:
        raise _truncated("shortstr", off, size, end)
    try:
        text = PyUnicode_DecodeUTF8(<const char*>p + off, size, NULL)
    except UnicodeDecodeError:
        raise _ProtocolError(f"invalid utf-8 in shortstr at offset {off}") from None
    poff[0] = off + size
    return text


cdef tuple _read_args(
    const unsigned char* p, Py_ssize_t* poff, Py_ssize_t end, bytes codes, Py_ssize_t nargs
):
    cdef Py_ssize_t off = poff[0]
    cdef const char* fmt = PyBytes_AS_STRING(codes)
    cdef Py_ssize_t nfmt = PyBytes_GET_SIZE(codes)
    cdef Py_ssize_t i, index = 0
    cdef uint32_t size
    cdef unsigned char bits = 0
    cdef int bit = 8
    cdef char code
    cdef object value
    cdef tuple args = PyTuple_New(nargs)
    for i in range(nfmt):
        code = fmt[i]
        if code == c'b' or code == c'c':
            if bit == 8:
                if off >= end:
                    raise _truncated("bit", off, 1, end)
                bits = p[off]
                off += 1
                bit = 0
            if code == c'b':
                value = (bits >> bit) & 1 == 1
                Py_INCREF(value)
                PyTuple_SET_ITEM(args, index, value)
                index += 1
            bit += 1
            continue
        bit = 8
        if code == c's' or code == c'z':
            value = _read_shortstr(p, &off, end)
            if code == c'z':
                continue
        elif code == c'q':
            if off + 8 > end:
                raise _truncated("longlong", off, 8, end)
            value = load_u64(p + off)
            off += 8
        elif code == c'h' or code == c'r':
            if off + 2 > end:
                raise _truncated("short", off, 2, end)
            value = load_u16(p + off)
            off += 2
            if code == c'r':
                continue
        elif code == c'l':
            if off + 4 > end:
                raise _truncated("long", off, 4, end)
            value = load_u32(p + off)
            off += 4
        elif code == c'o':
            if off >= end:
                raise _truncated("octet", off, 1, end)
            value = p[off]
            off += 1
        elif code == c'F':
            value = _read_table(p, &off, end, 1)
        else:  # x, S, y: longstr
            if off + 4 > end:
                raise _truncated("longstr", off, 4, end)
            size = load_u32(p + off)
            off += 4
            if off + size > end:
                raise _truncated("longstr", off, size, end)
            if code == c'x':
                value = PyBytes_FromStringAndSize(<const char*>p + off, size)
            elif code == c'S':
                try:
                    value = PyUnicode_DecodeUTF8(<const char*>p + off, size, NULL)
                except UnicodeDecodeError:
                    raise _ProtocolError(f"invalid utf-8 in longstr at offset {off}") from None
            off += size
            if code == c'y':
                continue
        Py_INCREF(value)
        PyTuple_SET_ITEM(args, index, value)
        index += 1
    poff[0] = off
    return args


cdef tuple _decode_method(const unsigned char* p, Py_ssize_t end, int* method_out):
    """The arguments of the method frame payload ``p[:end]``; its id in ``method_out``."""
    cdef int class_id, method_id, method
    cdef Py_ssize_t off = 4
    cdef PyObject* entry
    cdef tuple spec, args
    if end < 4:
        raise _ProtocolError(f"truncated method frame payload: {end} bytes, needs at least 4")
    class_id = load_u16(p)
    method_id = load_u16(p + 2)
    method = class_id << 16 | method_id
    entry = PyDict_GetItem(_SPECS, method)
    if entry is NULL:
        raise _ProtocolError(f"unknown method class {class_id} method {method_id}")
    spec = <tuple>entry
    try:
        args = _read_args(p, &off, end, <bytes>spec[1], len(<tuple>spec[2]))
    except ProtocolError as exc:
        raise _ProtocolError(f"cannot decode {spec[0]}: {exc}") from None
    if off != end:
        raise _ProtocolError(
            f"cannot decode {spec[0]}: {end - off} unexpected bytes after the arguments "
            f"at offset {off}"
        )
    method_out[0] = method
    return args


def decode_method(payload):
    """Decode a method frame's payload into ``(method, args)``.

    Raises:
        ProtocolError: an unknown method, truncated arguments or bytes after them.
    """
    cdef bytes buf = _as_bytes(payload)
    cdef int method = 0
    cdef tuple args = _decode_method(
        <const unsigned char*>PyBytes_AS_STRING(buf), PyBytes_GET_SIZE(buf), &method
    )
    return method, args


cdef int _write_shortstr(_Writer w, object value, int kind, object a, object b) except -1:
    cdef Py_ssize_t n
    if type(value) is str or isinstance(value, str):
        return _write_text(w, value, True, kind, a, b)
    if isinstance(value, bytes):
        n = PyBytes_GET_SIZE(value)
        if n > 255:
            raise _ProtocolError(
                f"cannot encode {_describe(kind, a, b)}: {n} bytes, over the shortstr limit "
                f"of 255"
            )
        w.u8(<unsigned char>n)
        w.raw(PyBytes_AS_STRING(value), n)
        return 0
    raise _ProtocolError(
        f"cannot encode {_describe(kind, a, b)}: {type(value).__name__}, not str"
    )


cdef int _write_longstr(_Writer w, object value, int kind, object a, object b) except -1:
    cdef Py_ssize_t n
    if type(value) is str or isinstance(value, str):
        return _write_text(w, value, False, kind, a, b)
    if isinstance(value, bytes):
        n = PyBytes_GET_SIZE(value)
        if n > 0xFFFFFFFF:
            raise _ProtocolError(
                f"cannot encode {_describe(kind, a, b)}: {n} bytes, over the longstr limit"
            )
        w.u32(<uint32_t>n)
        w.raw(PyBytes_AS_STRING(value), n)
        return 0
    raise _ProtocolError(
        f"cannot encode {_describe(kind, a, b)}: {type(value).__name__}, not str or bytes"
    )


cdef int _write_uint(
    _Writer w, object value, char code, int kind, object a, object b
) except -1:
    cdef unsigned long long v = 0, limit
    cdef bint ok = isinstance(value, int)
    if code == c'o':
        limit = 0xFF
    elif code == c'h':
        limit = 0xFFFF
    elif code == c'l':
        limit = 0xFFFFFFFF
    else:
        limit = 0xFFFFFFFFFFFFFFFF
    if ok:
        try:
            v = value
        except OverflowError:
            ok = False
    if not ok or v > limit:
        raise _ProtocolError(
            f"cannot encode {_describe(kind, a, b)}: {_vrepr(value)} is not an int in "
            f"0..{limit} ({_INT_NAMES[chr(code)]})"
        )
    if code == c'o':
        w.u8(<unsigned char>v)
    elif code == c'h':
        w.u16(<uint16_t>v)
    elif code == c'l':
        w.u32(<uint32_t>v)
    else:
        w.u64(<uint64_t>v)
    return 0


cdef int _write_args(_Writer w, tuple spec, object args) except -1:
    cdef str name = spec[0]
    cdef bytes codes = spec[1]
    cdef tuple fields = spec[2]
    cdef const char* fmt = PyBytes_AS_STRING(codes)
    cdef Py_ssize_t nfmt = PyBytes_GET_SIZE(codes)
    cdef Py_ssize_t i, index = 0
    cdef unsigned char bits = 0
    cdef int bit = 0
    cdef char code
    cdef tuple values
    if type(args) is tuple:
        values = <tuple>args
    else:
        if not isinstance(args, (tuple, list)):
            raise _ProtocolError(
                f"cannot encode {name}: arguments must be a tuple, not {type(args).__name__}"
            )
        values = tuple(args)
    if len(values) != len(fields):
        raise _ProtocolError(
            f"cannot encode {name}: takes {len(fields)} arguments "
            f"({', '.join(fields)}), got {len(values)}"
        )
    for i in range(nfmt):
        code = fmt[i]
        if code == c'b' or code == c'c':
            if code == c'b':
                if values[index]:
                    bits |= 1 << bit
                index += 1
            bit += 1
            if bit == 8:
                w.u8(bits)
                bits = 0
                bit = 0
            continue
        if bit:
            w.u8(bits)
            bits = 0
            bit = 0
        if code == c'r':
            w.u16(0)
        elif code == c'z':
            w.u8(0)
        elif code == c'y':
            w.u32(0)
        else:
            value = values[index]
            field = fields[index]
            index += 1
            if code == c's':
                _write_shortstr(w, value, 1, name, field)
            elif code == c'F':
                if value is not None and not isinstance(value, _Mapping):
                    raise _ProtocolError(
                        f"cannot encode {name} argument {field}: {type(value).__name__}, "
                        f"not a mapping"
                    )
                try:
                    _write_table(w, {} if value is None else value, 1)
                except ProtocolError as exc:
                    raise _ProtocolError(f"cannot encode {name} argument {field}: {exc}") from None
            elif code == c'x' or code == c'S':
                _write_longstr(w, value, 1, name, field)
            else:
                _write_uint(w, value, code, 1, name, field)
    if bit:
        w.u8(bits)
    return 0


cdef Py_ssize_t _frame_start(_Writer w, unsigned char frame_type, object channel) except -1:
    cdef Py_ssize_t start
    if not isinstance(channel, int) or not 0 <= channel <= 0xFFFF:
        raise _ProtocolError(
            f"cannot encode a frame on channel {_vrepr(channel)}: not 0..65535"
        )
    start = w.size
    w.reserve(7)
    w.buf[start] = frame_type
    store_u16(w.buf + start + 1, <uint16_t>channel)
    w.size += 7
    return start


cdef inline int _frame_end(_Writer w, Py_ssize_t start) except -1:
    store_u32(w.buf + start + 3, <uint32_t>(w.size - start - 7))
    return w.u8(0xCE)


def encode_method(channel, method, args):
    """One complete method frame: ``args`` in spec order, reserved fields left out.

    Raises:
        ProtocolError: an unknown method, the wrong number of arguments, or an argument of the
            wrong type or out of range (the message names it).
    """
    cdef PyObject* entry = NULL
    cdef _Writer w
    cdef Py_ssize_t start
    cdef int m
    if type(method) is int:
        entry = PyDict_GetItem(_SPECS, method)
    if entry is NULL:
        raise _ProtocolError(f"cannot encode unknown method {_vrepr(method)}")
    m = method
    w = _writer()
    start = _frame_start(w, 1, channel)
    w.u16(<uint16_t>(m >> 16))
    w.u16(<uint16_t>(m & 0xFFFF))
    _write_args(w, <tuple>entry, args)
    _frame_end(w, start)
    return w.tobytes()


# -- basic properties -------------------------------------------------------------------------


cdef int _write_properties(_Writer w, object properties, object headers) except -1:
    cdef Py_ssize_t start, i
    cdef uint16_t flags = 0
    cdef const char* codes = PyBytes_AS_STRING(_PROP_CODES)
    cdef char code
    cdef PyObject* found
    cdef object value, name
    cdef bint is_dict = type(properties) is dict
    if not is_dict and not isinstance(properties, _Mapping):
        raise _ProtocolError(
            f"cannot encode properties: {type(properties).__name__}, not a mapping"
        )
    get = None if is_dict else properties.get
    start = w.size
    w.u16(0)
    for i in range(_NPROPS):
        code = codes[i]
        name = _PROP_NAMES[i]
        if code == c'F':
            if headers is None:
                continue
            if not isinstance(headers, _Mapping):
                raise _ProtocolError(
                    f"cannot encode headers: {type(headers).__name__}, not a mapping"
                )
            try:
                _write_table(w, headers, 1)
            except ProtocolError as exc:
                raise _ProtocolError(f"cannot encode headers: {exc}") from None
        else:
            if is_dict:
                found = PyDict_GetItem(<dict>properties, name)
                if found is NULL:
                    continue
                value = <object>found
            else:
                value = get(name)
            if value is None:
                continue
            if code == c's':
                _write_shortstr(w, value, 2, name, None)
            else:
                _write_uint(w, value, code, 2, name, None)
        flags |= <uint16_t>(<int>_PROP_FLAGS[i])
    store_u16(w.buf + start, flags)
    return 0


def encode_properties(properties, headers=None):
    """Property flags and list of a basic content header; unset and ``None`` ones are left out.

    Keys of ``properties`` that are not basic properties are ignored.

    Raises:
        ProtocolError: a property of the wrong type or too long, or a bad header value.
    """
    cdef _Writer w = _writer()
    _write_properties(w, properties, headers)
    return w.tobytes()


cdef tuple _read_properties(const unsigned char* p, Py_ssize_t* poff, Py_ssize_t end):
    """``(properties, headers)`` from the property flags and list at ``p[poff:end]``."""
    cdef Py_ssize_t off = poff[0]
    cdef Py_ssize_t i
    cdef uint16_t flags
    cdef const char* codes = PyBytes_AS_STRING(_PROP_CODES)
    cdef char code
    cdef dict properties
    cdef object headers = None
    if off + 2 > end:
        raise _truncated("property flags", off, 2, end)
    flags = load_u16(p + off)
    off += 2
    if flags & _UNKNOWN_FLAGS:
        raise _ProtocolError(f"unknown property flags 0x{flags & _UNKNOWN_FLAGS:04x}")
    properties = {}
    for i in range(_NPROPS):
        if not flags & (0x8000 >> i):
            continue
        code = codes[i]
        if code == c's':
            PyDict_SetItem(properties, _PROP_NAMES[i], _read_shortstr(p, &off, end))
        elif code == c'F':
            headers = _read_table(p, &off, end, 1)
        elif code == c'o':
            if off >= end:
                raise _truncated("octet", off, 1, end)
            PyDict_SetItem(properties, _PROP_NAMES[i], p[off])
            off += 1
        else:
            if off + 8 > end:
                raise _truncated("longlong", off, 8, end)
            PyDict_SetItem(properties, _PROP_NAMES[i], load_u64(p + off))
            off += 8
    poff[0] = off
    return properties, headers


def decode_properties(data):
    """Decode property flags and list into ``(properties, headers)`` (``None``: no headers).

    Raises:
        ProtocolError: truncated or malformed data, unknown flags, or trailing bytes.
    """
    cdef bytes buf = _as_bytes(data)
    cdef Py_ssize_t off = 0
    cdef Py_ssize_t n = PyBytes_GET_SIZE(buf)
    cdef tuple result
    try:
        result = _read_properties(<const unsigned char*>PyBytes_AS_STRING(buf), &off, n)
    except ProtocolError as exc:
        raise _ProtocolError(f"cannot decode properties: {exc}") from None
    if off != n:
        raise _ProtocolError(
            f"cannot decode properties: {n - off} unexpected bytes after them at offset {off}"
        )
    return result


def encode_message(channel, exchange, routing_key, mandatory, body, properties, headers,
                   frame_max):
    """``basic.publish``, its content header and the body in frames of ``frame_max - 8`` bytes.

    One buffer for one ``sendall``. An empty body has no body frame.

    Raises:
        ProtocolError: a bad argument, property or header, or a content header frame larger
            than ``frame_max``.
        ValueError: ``frame_max`` is not in 4096..2**32-1.
    """
    cdef _Writer w
    cdef Py_ssize_t start, size, chunk, offset, piece, header_size
    cdef const char* data
    cdef bytes raw
    _check_frame_max(frame_max)
    if type(body) is bytes:
        raw = <bytes>body
    else:
        if not isinstance(body, (bytes, bytearray, memoryview)):
            raise _ProtocolError(
                f"cannot encode basic.publish: body is {type(body).__name__}, not bytes"
            )
        raw = bytes(body)
    w = _writer()
    start = _frame_start(w, 1, channel)
    w.raw(b"\x00\x3c\x00\x28\x00\x00", 6)  # basic.publish, reserved ticket
    _write_shortstr(w, exchange, 1, "basic.publish", "exchange")
    _write_shortstr(w, routing_key, 1, "basic.publish", "routing_key")
    w.u8(1 if mandatory else 0)
    _frame_end(w, start)
    size = PyBytes_GET_SIZE(raw)
    start = _frame_start(w, 2, channel)
    w.u16(60)
    w.u16(0)
    w.u64(<uint64_t>size)
    _write_properties(w, properties, headers)
    _frame_end(w, start)
    header_size = w.size - start
    if header_size > frame_max:
        raise _ProtocolError(
            f"cannot encode basic.publish: the content header frame is {header_size} "
            f"bytes, over frame_max {frame_max}"
        )
    chunk = <Py_ssize_t>frame_max - 8
    data = PyBytes_AS_STRING(raw)
    w.reserve(size + 8 * ((size + chunk - 1) // chunk))
    offset = 0
    while offset < size:
        piece = min(chunk, size - offset)
        start = w.size
        w.buf[start] = 3
        store_u16(w.buf + start + 1, <uint16_t>channel)
        store_u32(w.buf + start + 3, <uint32_t>piece)
        memcpy(w.buf + start + 7, data + offset, piece)
        w.buf[start + 7 + piece] = 0xCE
        w.size += 8 + piece
        offset += piece
    return w.tobytes()


# -- the frame decoder ------------------------------------------------------------------------


@cython.final
@cython.freelist(16)
cdef class _Content:
    """A content method waiting for its header and body frames on one channel."""

    cdef int method
    cdef tuple args
    cdef dict properties  # None until the content header arrived
    cdef object headers
    cdef uint64_t body_size
    cdef uint64_t received
    cdef list chunks  # (bytes, start, length) of each body frame so far


cdef object _delivery(int channel, _Content content, bytes body):
    cdef tuple args = content.args
    cdef int method = content.method
    cdef dict info
    if method == _M_DELIVER:
        return _Delivery(
            body,
            content.headers,
            content.properties,
            {
                "exchange": args[3],
                "routing_key": args[4],
                "redelivered": args[2],
                "consumer_tag": args[0],
                "channel": channel,
            },
            args[1],
        )
    if method == _M_GET_OK:
        info = {
            "exchange": args[2],
            "routing_key": args[3],
            "redelivered": args[1],
            "consumer_tag": None,
            "channel": channel,
            "message_count": args[4],
        }
        tag = args[0]
    elif method == _M_RETURN:
        info = {
            "exchange": args[2],
            "routing_key": args[3],
            "redelivered": False,
            "consumer_tag": None,
            "channel": channel,
            "reply_code": args[0],
            "reply_text": args[1],
        }
        tag = 0
    else:  # basic.publish, seen when decoding what a client sends
        info = {
            "exchange": args[0],
            "routing_key": args[1],
            "redelivered": False,
            "consumer_tag": None,
            "channel": channel,
        }
        tag = 0
    return (channel, method, args, _Delivery(body, content.headers, content.properties, info, tag))


cdef bytes _join(list chunks, Py_ssize_t total):
    """One bytes object from ``(bytes, start, length)`` pieces: the only copy of a body."""
    cdef bytes out = PyBytes_FromStringAndSize(NULL, total)
    cdef char* dst = PyBytes_AS_STRING(out)
    cdef Py_ssize_t pos = 0, start, length
    cdef tuple piece
    for piece in chunks:
        start = piece[1]
        length = piece[2]
        memcpy(dst + pos, PyBytes_AS_STRING(<bytes>piece[0]) + start, length)
        pos += length
    return out


@cython.final
cdef class FrameDecoder:
    """Turns the bytes read from an AMQP connection into events, in wire order.

    :meth:`feed` takes whatever the socket returned: frames may be split anywhere, many may
    come at once, and a message's body may span many frames. After a :class:`ProtocolError`
    the stream is unusable: close the connection.

    Args:
        frame_max: the largest frame accepted, header and end byte included; writable after
            ``connection.tune``.
    """

    cdef Py_ssize_t _frame_max
    cdef dict _content
    cdef Py_ssize_t _offset  # stream offset of the next byte fed
    # a frame split across feeds: its header bytes so far, then its payload pieces
    cdef unsigned char _head[7]
    cdef int _head_len
    cdef list _chunks
    cdef Py_ssize_t _got
    cdef Py_ssize_t _need
    cdef Py_ssize_t _frame_off

    def __init__(self, frame_max=131072):
        self._frame_max = _check_frame_max(frame_max)
        self._content = {}
        self._offset = 0
        self._head_len = 0
        self._chunks = []
        self._got = 0
        self._need = 0
        self._frame_off = 0

    @property
    def frame_max(self):
        """The largest frame accepted (4096..2**32-1), header and end byte included."""
        return self._frame_max

    @frame_max.setter
    def frame_max(self, value):
        self._frame_max = _check_frame_max(value)

    def feed(self, data):
        """Buffer ``data`` and return the events of every frame it completes.

        Raises:
            ProtocolError: a malformed stream; the message names the frame and its offset.
        """
        cdef bytes buf = _as_bytes(data)
        cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(buf)
        cdef Py_ssize_t size = PyBytes_GET_SIZE(buf)
        cdef Py_ssize_t pos = 0, end
        cdef int frame_type, channel
        cdef uint32_t length
        cdef list events = []
        if self._head_len:
            pos = self._resume(buf, p, size, events)
            if pos < 0:
                self._offset += size
                return events
        while size - pos >= 7:
            frame_type = p[pos]
            channel = load_u16(p + pos + 1)
            length = load_u32(p + pos + 3)
            if (
                (frame_type != 1 and frame_type != 2 and frame_type != 3 and frame_type != 8)
                or <Py_ssize_t>length + 8 > self._frame_max
                or (frame_type == 8 and channel != 0)
            ):
                self._bad_header(frame_type, channel, length, self._offset + pos)
            end = pos + 7 + <Py_ssize_t>length
            if end >= size:
                break
            if p[end] != 0xCE:
                self._bad_end(p[end], frame_type, channel, self._offset + pos)
            self._frame(frame_type, channel, buf, p, pos + 7, length, events, self._offset + pos)
            pos = end + 1
        if pos < size:
            self._frame_off = self._offset + pos
            if size - pos >= 7:
                memcpy(self._head, p + pos, 7)
                self._head_len = 7
                self._need = <Py_ssize_t>load_u32(p + pos + 3) + 1
                self._got = size - pos - 7
                self._chunks = [(buf, pos + 7, self._got)]
            else:
                memcpy(self._head, p + pos, size - pos)
                self._head_len = <int>(size - pos)
        self._offset += size
        return events

    cdef Py_ssize_t _resume(
        self, bytes buf, const unsigned char* p, Py_ssize_t size, list events
    ) except -2:
        """Complete the frame split across feeds; the position after it, or -1 if short."""
        cdef Py_ssize_t pos = 0, take, length, index
        cdef int frame_type, channel
        cdef unsigned char end_byte
        cdef bytes payload
        cdef tuple last
        if self._head_len < 7:
            pos = min(7 - self._head_len, size)
            memcpy(self._head + self._head_len, p, pos)
            self._head_len += <int>pos
            if self._head_len < 7:
                return -1
            frame_type = self._head[0]
            channel = load_u16(self._head + 1)
            length = load_u32(self._head + 3)
            if (
                (frame_type != 1 and frame_type != 2 and frame_type != 3 and frame_type != 8)
                or length + 8 > self._frame_max
                or (frame_type == 8 and channel != 0)
            ):
                self._bad_header(frame_type, channel, <uint32_t>length, self._frame_off)
            self._need = length + 1
            self._got = 0
            self._chunks = []
        take = min(self._need - self._got, size - pos)
        if take:
            self._chunks.append((buf, pos, take))
            self._got += take
            pos += take
        if self._got < self._need:
            return -1
        frame_type = self._head[0]
        channel = load_u16(self._head + 1)
        length = load_u32(self._head + 3)
        index = len(self._chunks) - 1
        last = self._chunks[index]
        end_byte = PyBytes_AS_STRING(<bytes>last[0])[<Py_ssize_t>last[1] + <Py_ssize_t>last[2] - 1]
        self._chunks[index] = (last[0], last[1], <Py_ssize_t>last[2] - 1)
        payload = _join(self._chunks, length)
        self._head_len = 0
        self._chunks = []
        if end_byte != 0xCE:
            self._bad_end(end_byte, frame_type, channel, self._frame_off)
        self._frame(
            frame_type,
            channel,
            payload,
            <const unsigned char*>PyBytes_AS_STRING(payload),
            0,
            <uint32_t>length,
            events,
            self._frame_off,
        )
        return pos

    cdef int _bad_header(
        self, int frame_type, int channel, uint32_t length, Py_ssize_t off
    ) except -1:
        if frame_type != 1 and frame_type != 2 and frame_type != 3 and frame_type != 8:
            if frame_type == 0x41 and channel == 0x4D51 and length >> 24 == 0x50:
                raise _ProtocolError(
                    f"the broker refused AMQP 0-9-1 and answered with protocol header "
                    f"AMQP {length >> 16 & 0xFF}-{length >> 8 & 0xFF}-{length & 0xFF} "
                    f"at stream offset {off}"
                )
            raise _ProtocolError(
                f"unknown frame type {frame_type} on channel {channel} at stream offset {off}"
            )
        if frame_type == 8 and channel != 0:
            raise _ProtocolError(
                f"heartbeat frame on channel {channel} (must be 0) at stream offset {off}"
            )
        raise _ProtocolError(
            f"{_FRAME_KINDS[frame_type]} frame of {length + 8} bytes on channel {channel} "
            f"at stream offset {off} exceeds frame_max {self._frame_max}"
        )

    cdef int _bad_end(
        self, unsigned char end_byte, int frame_type, int channel, Py_ssize_t off
    ) except -1:
        raise _ProtocolError(
            f"bad frame end 0x{end_byte:02x} (expected 0xce) after a "
            f"{_FRAME_KINDS[frame_type]} frame on channel {channel} at stream offset {off}"
        )

    cdef int _frame(
        self,
        int frame_type,
        int channel,
        bytes buf,
        const unsigned char* p,
        Py_ssize_t start,
        uint32_t length,
        list events,
        Py_ssize_t off,
    ) except -1:
        cdef PyObject* found
        cdef _Content content
        cdef uint64_t received, body_size
        cdef bytes body
        cdef int method = 0
        cdef tuple args
        cdef Py_ssize_t pos
        cdef object key = channel
        found = PyDict_GetItem(self._content, key)
        if frame_type == 3:
            if found is NULL or (<_Content>found).properties is None:
                raise _ProtocolError(
                    f"content body frame on channel {channel} without a content header "
                    f"at stream offset {off}"
                )
            content = <_Content>found
            received = content.received + length
            if received > content.body_size:
                raise _ProtocolError(
                    f"content body on channel {channel} overruns its declared size "
                    f"{content.body_size} at stream offset {off}"
                )
            if received == content.body_size and not content.chunks:
                if start == 0 and length == PyBytes_GET_SIZE(buf):
                    body = buf
                else:
                    body = PyBytes_FromStringAndSize(<const char*>p + start, length)
            else:
                if content.chunks is None:
                    content.chunks = []
                content.chunks.append((buf, start, length))
                content.received = received
                if received < content.body_size:
                    return 0
                body = _join(content.chunks, <Py_ssize_t>received)
            del self._content[key]
            events.append(_delivery(channel, content, body))
        elif frame_type == 1:
            if found is not NULL:
                content = <_Content>found
                raise _ProtocolError(
                    f"expected a content "
                    f"{'body' if content.properties is not None else 'header'} frame on "
                    f"channel {channel} after {_METHOD_NAMES[content.method]}, got a method "
                    f"frame at stream offset {off}"
                )
            try:
                args = _decode_method(p + start, length, &method)
            except ProtocolError as exc:
                raise _ProtocolError(
                    f"{exc} (method frame on channel {channel} at stream offset {off})"
                ) from None
            if (
                method == _M_DELIVER
                or method == _M_GET_OK
                or method == _M_RETURN
                or method == _M_PUBLISH
            ):
                content = _Content.__new__(_Content)
                content.method = method
                content.args = args
                content.properties = None
                content.headers = None
                content.body_size = 0
                content.received = 0
                content.chunks = None
                PyDict_SetItem(self._content, key, content)
            else:
                events.append((channel, method, args))
        elif frame_type == 2:
            if found is NULL:
                raise _ProtocolError(
                    f"content header frame on channel {channel} without a content method "
                    f"at stream offset {off}"
                )
            content = <_Content>found
            if content.properties is not None:
                raise _ProtocolError(
                    f"expected a content body frame on channel {channel}, got a content "
                    f"header frame at stream offset {off}"
                )
            if length < 14:
                raise _ProtocolError(
                    f"truncated content header frame on channel {channel} at stream offset "
                    f"{off}: {length} bytes, needs at least 14"
                )
            if load_u16(p + start) != content.method >> 16:
                raise _ProtocolError(
                    f"content header class {load_u16(p + start)} does not match "
                    f"{_METHOD_NAMES[content.method]} on channel {channel} at stream offset {off}"
                )
            body_size = load_u64(p + start + 4)
            pos = 0
            try:
                properties, headers = _read_properties(p + start + 12, &pos, length - 12)
                if pos != length - 12:
                    raise _ProtocolError(
                        f"{length - 12 - pos} unexpected bytes after the properties "
                        f"at offset {pos}"
                    )
            except ProtocolError as exc:
                raise _ProtocolError(
                    f"cannot decode properties: {exc} (content header frame on channel "
                    f"{channel} at stream offset {off})"
                ) from None
            content.properties = properties
            content.headers = headers
            content.body_size = body_size
            if body_size == 0:
                del self._content[key]
                events.append(_delivery(channel, content, b""))
        else:
            events.append(_HEARTBEAT)
        return 0
