# cython: language_level=3
"""Coalesce the acks of one AMQP channel: early acks into multiple-acks, late acks by run.

Compiled twin of ``celeriac/_speedups_py/consumer.py``, which is the reference and the type
source (read its module docstring for the model): same names, same behaviour, same exceptions
and messages. Keep the two in step; ``tests/unit/test_ack_batcher_agreement.py`` checks they
agree.

The entries live in one C array of ``(tag, flags)`` between ``_head`` and ``_len``. When it is
full, settled entries are squeezed out first and the array grows only if it is still more than
half full, so appends stay O(1) amortized and memory follows the outstanding deliveries.
Callbacks are bound once in ``__init__``; re-entering the batcher from one raises, which also
keeps the array from moving under a flush. Never log from here.
"""

cimport cython
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc

from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_Check

cdef extern from "Python.h":
    const Py_ssize_t PY_SSIZE_T_MAX

from collections.abc import Callable
from operator import index as _index

__all__ = ["AckBatcher", "SendAck", "SendReject"]

SendAck = Callable[[int, bool], None]
SendReject = Callable[[int, bool], None]

cdef enum:
    _OUT = 0
    _MARKED = 1
    _DEAD = 2
    _STATE = 3
    _JOINED = 4
    _NOT_JOINED = 0xFB  # ~_JOINED as an unsigned char
    _MIN_CAP = 64

ctypedef struct _Entry:
    long long tag
    unsigned char flags


@cython.final
cdef class AckBatcher:
    """Coalesce the acks of one channel's deliveries and send them through callbacks.

    ``delivered(tag)`` for each delivery as it arrives, ``ack(tag)`` when the worker may ack it
    (early or late, in any order), ``reject(tag, requeue)`` to settle one at once. ``flush()``
    sends one multiple-ack for the ackable run at the lowest unsettled tag and an individual
    ack for every other ackable delivery, so nothing waits behind a long-running task. ``ack``
    flushes by itself once ``max_batch`` acks are pending; the consumer also flushes when idle
    and before any blocking wait. A run of one delivery is acked with ``multiple=False``.

    If a callback raises (the connection died), the exception propagates and every delivery
    whose ack or reject was not sent stays outstanding; :meth:`reset` then returns them.
    Calling the batcher from inside its own callbacks raises :class:`RuntimeError`.

    Args:
        send_ack: ``send_ack(tag, multiple)`` sends ``basic.ack``.
        send_reject: ``send_reject(tag, requeue)`` sends ``basic.reject``.
        max_batch: flush from :meth:`ack` once this many acks are pending (at least 1).
    """

    cdef object _send_ack
    cdef object _send_reject
    cdef readonly Py_ssize_t max_batch
    cdef readonly Py_ssize_t pending
    cdef readonly Py_ssize_t outstanding
    cdef _Entry* _entries
    cdef Py_ssize_t _head
    cdef Py_ssize_t _len
    cdef Py_ssize_t _cap
    cdef long long _last
    cdef bint _tail_joined
    cdef bint _sending

    def __cinit__(self):
        self._entries = <_Entry*>PyMem_Malloc(_MIN_CAP * sizeof(_Entry))
        if self._entries is NULL:
            raise MemoryError()
        self._cap = _MIN_CAP

    def __dealloc__(self):
        PyMem_Free(self._entries)

    def __init__(self, send_ack, send_reject, max_batch=64):
        max_batch = _index(max_batch)
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self._send_ack = send_ack
        self._send_reject = send_reject
        self.max_batch = max_batch
        self._head = 0
        self._len = 0
        self._last = 0
        self._tail_joined = True
        self._sending = False
        self.pending = 0
        self.outstanding = 0

    def delivered(self, tag):
        """Record that delivery ``tag`` arrived.

        Raises:
            ValueError: ``tag`` is not above every tag delivered before (tags start at 1).
            OverflowError: ``tag`` does not fit in a signed 64-bit integer.
            RuntimeError: called from one of this batcher's callbacks.
        """
        cdef long long last = self._last
        cdef long long value
        cdef _Entry* entry
        if self._sending:
            raise _reentered()
        value = _as_tag(tag)
        if value <= last:
            raise _bad_delivery(value, last)
        if self._len == self._cap:
            self._make_room()
        entry = &self._entries[self._len]
        entry.tag = value
        entry.flags = _JOINED if value == last + 1 and self._tail_joined else _OUT
        self._len += 1
        self._last = value
        self._tail_joined = True
        self.outstanding += 1

    def ack(self, tag):
        """Mark delivery ``tag`` ackable; flush when ``max_batch`` acks are pending.

        Raises:
            ValueError: ``tag`` is not outstanding (never delivered, already settled) or is
                already marked ackable.
            OverflowError: ``tag`` does not fit in a signed 64-bit integer.
            RuntimeError: called from one of this batcher's callbacks.
            Exception: whatever ``send_ack`` raised during the flush; ``tag`` stays pending.
        """
        cdef _Entry* entry = &self._entries[self._find(tag, "ack")]
        if (entry.flags & _STATE) == _MARKED:
            raise ValueError(f"cannot ack delivery tag {entry.tag}: it is already acked")
        entry.flags |= _MARKED
        self.pending += 1
        if self.pending >= self.max_batch:
            self._flush()

    def reject(self, tag, bint requeue):
        """Send ``basic.reject(tag, requeue)`` now and forget ``tag``.

        Raises:
            ValueError: ``tag`` is not outstanding, or is already marked ackable.
            OverflowError: ``tag`` does not fit in a signed 64-bit integer.
            RuntimeError: called from one of this batcher's callbacks.
            Exception: whatever ``send_reject`` raised; ``tag`` stays outstanding.
        """
        cdef Py_ssize_t i = self._find(tag, "reject")
        cdef long long value = self._entries[i].tag
        if (self._entries[i].flags & _STATE) == _MARKED:
            raise ValueError(f"cannot reject delivery tag {value}: it is already acked")
        self._sending = True
        try:
            self._send_reject(value, requeue)
        finally:
            self._sending = False
        self._settle(i)

    def flush(self):
        """Send the acks for every ackable delivery; return how many deliveries they covered.

        One ``send_ack(t, True)`` covers the run of ackable (or already settled) deliveries
        that starts at the lowest unsettled tag and ends at ``t``, its last ackable one
        (``multiple=False`` if the run holds one ackable delivery); each ackable delivery
        beyond that run gets its own ``send_ack(t, False)``.

        Raises:
            RuntimeError: called from one of this batcher's callbacks.
            Exception: whatever ``send_ack`` raised; the deliveries not yet acked stay pending.
        """
        return self._flush()

    def reset(self):
        """Forget everything (the channel is gone); return the tags never settled, in order.

        Tags on a new channel start at 1 again, so the next :meth:`delivered` may reuse them.

        Raises:
            RuntimeError: called from one of this batcher's callbacks.
        """
        cdef list unsettled = []
        cdef Py_ssize_t i
        cdef _Entry* entries = self._entries
        cdef _Entry* smaller
        if self._sending:
            raise _reentered()
        for i in range(self._head, self._len):
            if (entries[i].flags & _STATE) != _DEAD:
                unsettled.append(entries[i].tag)
        self._head = 0
        self._len = 0
        self._last = 0
        self._tail_joined = True
        self.pending = 0
        self.outstanding = 0
        if self._cap > _MIN_CAP:
            smaller = <_Entry*>PyMem_Realloc(entries, _MIN_CAP * sizeof(_Entry))
            if smaller is not NULL:  # else keep the bigger array; nothing is lost
                self._entries = smaller
                self._cap = _MIN_CAP
        return unsettled

    # -- internals -----------------------------------------------------------------------

    cdef Py_ssize_t _find(self, object tag_obj, str op) except -1:
        """Index of ``tag``'s entry if it is outstanding, else raise for operation ``op``."""
        cdef _Entry* entries = self._entries
        cdef Py_ssize_t head = self._head
        cdef Py_ssize_t n = self._len
        cdef Py_ssize_t lo, hi, mid
        cdef long long tag, first, offset
        if self._sending:
            raise _reentered()
        tag = _as_tag(tag_obj)
        if head < n:
            first = entries[head].tag
            if first <= tag <= self._last:
                # Tags are distinct integers in order, so an entry sits at most at its offset
                # from the head: exact when none between was skipped or compacted away.
                offset = tag - first
                if offset < n - head:
                    hi = head + <Py_ssize_t>offset
                    if entries[hi].tag == tag:
                        lo = hi
                    else:
                        lo = head
                else:
                    lo = head
                    hi = n
                while lo < hi:
                    mid = lo + (hi - lo) // 2
                    if entries[mid].tag < tag:
                        lo = mid + 1
                    else:
                        hi = mid
                if lo < n and entries[lo].tag == tag and (entries[lo].flags & _STATE) != _DEAD:
                    return lo
        raise _not_outstanding(tag, op, self._last)

    cdef Py_ssize_t _flush(self) except -1:
        cdef _Entry* entries = self._entries  # does not move: delivered() cannot run meanwhile
        cdef Py_ssize_t n = self._len
        cdef Py_ssize_t head = self._head
        cdef Py_ssize_t end, j, count
        cdef Py_ssize_t covered = 0
        cdef unsigned char flags
        if self._sending:
            raise _reentered()
        if self.pending == 0:
            return 0
        if entries[head].flags == (_MARKED | _JOINED):
            # the run: every entry joined to the one before it, none still running
            end = head
            count = 1
            j = head + 1
            while j < n:
                flags = entries[j].flags
                if (flags & _STATE) == _OUT or not (flags & _JOINED):
                    break
                if (flags & _STATE) == _MARKED:
                    end = j
                    count += 1
                j += 1
            self._send(entries[end].tag, count > 1)
            # entries before the head are never read again: no need to mark the run settled
            self.pending -= count
            self.outstanding -= count
            self._head = end + 1
            self._drop_front()
            covered = count
        # Beyond a gap: one ack each, so nothing waits for a long-running task to finish.
        j = self._head
        while self.pending:
            while (entries[j].flags & _STATE) != _MARKED:
                j += 1
            self._send(entries[j].tag, False)
            self.pending -= 1
            self._settle(j)
            covered += 1
            j += 1
        return covered

    cdef int _send(self, long long tag, bint multiple) except -1:
        self._sending = True
        try:
            self._send_ack(tag, multiple)
        finally:
            self._sending = False
        return 0

    cdef inline void _settle(self, Py_ssize_t i) noexcept:
        """Entry ``i`` was acked or rejected on its own."""
        self._entries[i].flags = (self._entries[i].flags & _JOINED) | _DEAD
        self.outstanding -= 1
        if i == self._head:
            self._drop_front()

    cdef void _drop_front(self) noexcept:
        """Move the head past settled entries, carrying their joined bits forward."""
        cdef _Entry* entries = self._entries
        cdef Py_ssize_t i = self._head
        cdef Py_ssize_t n = self._len
        cdef bint joined = True
        while i < n and (entries[i].flags & _STATE) == _DEAD:
            if not (entries[i].flags & _JOINED):
                joined = False
            i += 1
        if i == n:
            self._tail_joined = self._tail_joined and joined
            self._head = 0
            self._len = 0
            return
        if not joined:
            entries[i].flags &= _NOT_JOINED
        self._head = i

    cdef int _make_room(self) except -1:
        """The array is full: drop settled entries, then grow (or shrink) to keep half free."""
        cdef _Entry* entries = self._entries
        cdef _Entry* moved
        cdef Py_ssize_t r
        cdef Py_ssize_t w = 0
        cdef Py_ssize_t cap = self._cap
        cdef Py_ssize_t new_cap
        cdef bint joined = True
        cdef unsigned char flags
        for r in range(self._head, self._len):
            flags = entries[r].flags
            if (flags & _STATE) == _DEAD:
                if not (flags & _JOINED):
                    joined = False
                continue
            if not joined:
                flags &= _NOT_JOINED
            entries[w].tag = entries[r].tag
            entries[w].flags = flags
            w += 1
            joined = True
        self._tail_joined = self._tail_joined and joined
        self._head = 0
        self._len = w
        if w > cap // 2:
            if cap > PY_SSIZE_T_MAX // (2 * <Py_ssize_t>sizeof(_Entry)):
                raise MemoryError()
            new_cap = cap * 2
        elif w < cap // 8 and cap > _MIN_CAP:
            new_cap = cap // 2
        else:
            return 0
        moved = <_Entry*>PyMem_Realloc(entries, new_cap * sizeof(_Entry))
        if moved is NULL:
            if w == cap:
                raise MemoryError()
            return 0  # compacting made room; growing can wait for the next time
        self._entries = moved
        self._cap = new_cap
        return 0


cdef inline long long _as_tag(object tag) except? -1:
    """``tag`` as a C integer: ints (and subclasses) only, never a truncated float."""
    cdef int overflow = 0
    cdef long long value
    if not PyLong_Check(tag):
        raise TypeError(f"delivery tag must be an int, not {type(tag).__name__}")
    value = PyLong_AsLongLongAndOverflow(tag, &overflow)
    if overflow:
        raise OverflowError(f"delivery tag {tag} does not fit in a signed 64-bit integer")
    return value


cdef object _reentered():
    return RuntimeError("ack batcher called from inside its own send_ack or send_reject")


cdef object _bad_delivery(long long tag, long long last):
    if tag < 1:
        return ValueError(f"cannot accept delivery tag {tag}: tags start at 1")
    return ValueError(f"cannot accept delivery tag {tag}: not above the last delivered tag {last}")


cdef object _not_outstanding(long long tag, str op, long long last):
    if tag < 1 or tag > last:
        return ValueError(f"cannot {op} delivery tag {tag}: it was never delivered")
    return ValueError(
        f"cannot {op} delivery tag {tag}: it is not outstanding "
        f"(already settled, or delivered to another consumer)"
    )
