"""Coalesce the acks of one AMQP channel: early acks into multiple-acks, late acks by run.

Pure twin of ``_speedups/consumer.pyx``: same names, same behaviour, same exceptions and
messages. Keep the two in step; ``tests/unit/test_ack_batcher_agreement.py`` checks they agree.

AMQP 0-9-1 numbers the deliveries of a channel 1, 2, 3, ...; ``basic.ack(tag, multiple=True)``
settles every still-unacked delivery of the *channel* up to ``tag``. So a multiple-ack may end
on tag ``t`` only when every tag below ``t`` is either already settled or ready to be acked by
us. The batcher keeps one entry per delivery that is not yet settled, in tag order, and a
"joined" bit per entry that says whether every tag between it and the entry before it (or the
start of the channel) was delivered here and is settled. A tag this batcher never saw (skipped
by :meth:`AckBatcher.delivered`: another consumer on the same channel) clears that bit, and
nothing at or above it is ever covered by a multiple-ack: that delivery may still be unacked.
Settled entries leave from the front at once and from the middle when the buffer is compacted,
so memory follows the number of outstanding deliveries, not the total volume.

Mechanism only: it returns values or raises, and never logs.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from operator import index
from typing import Final

__all__ = ["AckBatcher", "SendAck", "SendReject"]

SendAck = Callable[[int, bool], None]
"""``send_ack(delivery_tag, multiple)``: send one ``basic.ack``."""

SendReject = Callable[[int, bool], None]
"""``send_reject(delivery_tag, requeue)``: send one ``basic.reject``."""

# Entry flags: two bits of state and the joined bit (see the module docstring).
_OUT: Final = 0  # delivered, the worker has not said it may be acked
_MARKED: Final = 1  # ackable, the ack is not sent yet
_DEAD: Final = 2  # settled (acked or rejected); waits in the middle for compaction
_STATE: Final = 3
_JOINED: Final = 4

# The compiled twin keeps tags as C ``long long``; the same range here keeps the two alike.
_MIN_TAG: Final = -(2**63)
_MAX_TAG: Final = 2**63 - 1
# Compact once at least this many settled entries wait and they are half of the buffer.
_COMPACT_MIN: Final = 64


class AckBatcher:
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

    __slots__ = (
        "_dead",
        "_flags",
        "_head",
        "_last",
        "_max_batch",
        "_outstanding",
        "_pending",
        "_send_ack",
        "_send_reject",
        "_sending",
        "_tags",
        "_tail_joined",
    )

    def __init__(self, send_ack: SendAck, send_reject: SendReject, max_batch: int = 64) -> None:
        max_batch = index(max_batch)
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self._send_ack = send_ack
        self._send_reject = send_reject
        self._max_batch = max_batch
        self._tags: list[int] = []
        self._flags = bytearray()
        self._head = 0  # entries before it are settled and only wait to be dropped
        self._dead = 0  # settled entries at or after _head
        self._last = 0  # highest tag delivered since the start or the last reset
        # every tag between the last entry and _last was delivered here and is settled
        self._tail_joined = True
        self._sending = False
        self._pending = 0
        self._outstanding = 0

    @property
    def max_batch(self) -> int:
        """Pending acks that make :meth:`ack` flush."""
        return self._max_batch

    @property
    def pending(self) -> int:
        """Deliveries marked ackable whose ack is not sent yet."""
        return self._pending

    @property
    def outstanding(self) -> int:
        """Deliveries neither acked (sent) nor rejected; includes the pending ones."""
        return self._outstanding

    def delivered(self, tag: int) -> None:
        """Record that delivery ``tag`` arrived.

        Raises:
            ValueError: ``tag`` is not above every tag delivered before (tags start at 1).
            OverflowError: ``tag`` does not fit in a signed 64-bit integer.
            RuntimeError: called from one of this batcher's callbacks.
        """
        if self._sending:
            raise _reentered()
        if type(tag) is not int:
            tag = _as_int(tag)
        last = self._last
        if tag <= last or tag > _MAX_TAG:
            raise _bad_delivery(tag, last)
        removable = self._head + self._dead
        if removable >= _COMPACT_MIN and removable * 2 >= len(self._tags):
            self._compact()
        self._flags.append(_JOINED if tag == last + 1 and self._tail_joined else _OUT)
        self._tags.append(tag)
        self._last = tag
        self._tail_joined = True
        self._outstanding += 1

    def ack(self, tag: int) -> None:
        """Mark delivery ``tag`` ackable; flush when ``max_batch`` acks are pending.

        Raises:
            ValueError: ``tag`` is not outstanding (never delivered, already settled) or is
                already marked ackable.
            OverflowError: ``tag`` does not fit in a signed 64-bit integer.
            RuntimeError: called from one of this batcher's callbacks.
            Exception: whatever ``send_ack`` raised during the flush; ``tag`` stays pending.
        """
        i = self._find(tag, "ack")
        flags = self._flags
        flag = flags[i]
        if flag & _STATE == _MARKED:
            raise ValueError(f"cannot ack delivery tag {self._tags[i]}: it is already acked")
        flags[i] = flag | _MARKED
        self._pending += 1
        if self._pending >= self._max_batch:
            self.flush()

    def reject(self, tag: int, requeue: bool) -> None:
        """Send ``basic.reject(tag, requeue)`` now and forget ``tag``.

        Raises:
            ValueError: ``tag`` is not outstanding, or is already marked ackable.
            OverflowError: ``tag`` does not fit in a signed 64-bit integer.
            RuntimeError: called from one of this batcher's callbacks.
            Exception: whatever ``send_reject`` raised; ``tag`` stays outstanding.
        """
        i = self._find(tag, "reject")
        if self._flags[i] & _STATE == _MARKED:
            raise ValueError(f"cannot reject delivery tag {self._tags[i]}: it is already acked")
        self._sending = True
        try:
            self._send_reject(self._tags[i], bool(requeue))
        finally:
            self._sending = False
        self._settle(i)

    def flush(self) -> int:
        """Send the acks for every ackable delivery; return how many deliveries they covered.

        One ``send_ack(t, True)`` covers the run of ackable (or already settled) deliveries
        that starts at the lowest unsettled tag and ends at ``t``, its last ackable one
        (``multiple=False`` if the run holds one ackable delivery); each ackable delivery
        beyond that run gets its own ``send_ack(t, False)``.

        Raises:
            RuntimeError: called from one of this batcher's callbacks.
            Exception: whatever ``send_ack`` raised; the deliveries not yet acked stay pending.
        """
        if self._sending:
            raise _reentered()
        if not self._pending:
            return 0
        tags = self._tags
        flags = self._flags
        n = len(tags)
        head = self._head
        covered = 0
        if flags[head] == _MARKED | _JOINED:
            # the run: every entry joined to the one before it, none still running
            end = head
            count = 1
            j = head + 1
            while j < n:
                flag = flags[j]
                if flag & _STATE == _OUT or not flag & _JOINED:
                    break
                if flag & _STATE == _MARKED:
                    end = j
                    count += 1
                j += 1
            self._send(tags[end], count > 1)
            # entries before the head are never read again: no need to mark the run settled
            self._dead -= end + 1 - head - count
            self._pending -= count
            self._outstanding -= count
            self._head = end + 1
            self._drop_front()
            covered = count
        # Beyond a gap: one ack each, so nothing waits for a long-running task to finish.
        j = self._head
        while self._pending:
            while flags[j] & _STATE != _MARKED:
                j += 1
            self._send(tags[j], False)
            self._pending -= 1
            self._settle(j)
            covered += 1
            j += 1
        return covered

    def reset(self) -> list[int]:
        """Forget everything (the channel is gone); return the tags never settled, in order.

        Tags on a new channel start at 1 again, so the next :meth:`delivered` may reuse them.

        Raises:
            RuntimeError: called from one of this batcher's callbacks.
        """
        if self._sending:
            raise _reentered()
        flags = self._flags
        tags = self._tags
        unsettled = [tags[i] for i in range(self._head, len(tags)) if flags[i] & _STATE != _DEAD]
        self._tags = []
        self._flags = bytearray()
        self._head = 0
        self._dead = 0
        self._last = 0
        self._tail_joined = True
        self._pending = 0
        self._outstanding = 0
        return unsettled

    # -- internals -----------------------------------------------------------------------

    def _find(self, tag: int, op: str) -> int:
        """Index of ``tag``'s entry if it is outstanding, else raise for operation ``op``."""
        if self._sending:
            raise _reentered()
        if type(tag) is not int:
            tag = _as_int(tag)
        tags = self._tags
        head = self._head
        n = len(tags)
        if head < n:
            first = tags[head]
            if first <= tag <= self._last:
                # Tags are distinct integers in order, so an entry sits at most at its offset
                # from the head: exact when none between was skipped or compacted away.
                i = head + (tag - first)
                if i >= n or tags[i] != tag:
                    i = bisect_left(tags, tag, head, min(i, n))
                if i < n and tags[i] == tag and self._flags[i] & _STATE != _DEAD:
                    return i
        raise _not_outstanding(tag, op, self._last)

    def _send(self, tag: int, multiple: bool) -> None:
        self._sending = True
        try:
            self._send_ack(tag, multiple)
        finally:
            self._sending = False

    def _settle(self, i: int) -> None:
        """Entry ``i`` was acked or rejected on its own."""
        flags = self._flags
        flags[i] = (flags[i] & _JOINED) | _DEAD
        self._outstanding -= 1
        self._dead += 1
        if i == self._head:
            self._drop_front()

    def _drop_front(self) -> None:
        """Move the head past settled entries, carrying their joined bits forward."""
        flags = self._flags
        n = len(flags)
        head = self._head
        i = head
        joined = True
        while i < n and flags[i] & _STATE == _DEAD:
            if not flags[i] & _JOINED:
                joined = False
            i += 1
        if i == n:
            self._tail_joined = self._tail_joined and joined
            self._tags.clear()
            flags.clear()
            self._head = 0
            self._dead = 0
            return
        if not joined:
            flags[i] &= ~_JOINED
        self._dead -= i - head
        self._head = i

    def _compact(self) -> None:
        """Drop every settled entry, folding their joined bits into the next one kept."""
        tags = self._tags
        flags = self._flags
        kept_tags: list[int] = []
        kept_flags = bytearray()
        joined = True
        for i in range(self._head, len(tags)):
            flag = flags[i]
            if flag & _STATE == _DEAD:
                if not flag & _JOINED:
                    joined = False
                continue
            kept_tags.append(tags[i])
            kept_flags.append(flag if joined else flag & ~_JOINED)
            joined = True
        self._tail_joined = self._tail_joined and joined
        self._tags = kept_tags
        self._flags = kept_flags
        self._head = 0
        self._dead = 0


def _as_int(tag: object) -> int:
    """``tag`` as an exact int: ints (and subclasses) only, never a truncated float."""
    if isinstance(tag, int):
        return int.__index__(tag)
    raise TypeError(f"delivery tag must be an int, not {type(tag).__name__}")


def _reentered() -> RuntimeError:
    return RuntimeError("ack batcher called from inside its own send_ack or send_reject")


def _too_large(tag: int) -> OverflowError:
    return OverflowError(f"delivery tag {tag} does not fit in a signed 64-bit integer")


def _bad_delivery(tag: int, last: int) -> Exception:
    if not _MIN_TAG <= tag <= _MAX_TAG:
        return _too_large(tag)
    if tag < 1:
        return ValueError(f"cannot accept delivery tag {tag}: tags start at 1")
    return ValueError(f"cannot accept delivery tag {tag}: not above the last delivered tag {last}")


def _not_outstanding(tag: int, op: str, last: int) -> Exception:
    if not _MIN_TAG <= tag <= _MAX_TAG:
        return _too_large(tag)
    if tag < 1 or tag > last:
        return ValueError(f"cannot {op} delivery tag {tag}: it was never delivered")
    return ValueError(
        f"cannot {op} delivery tag {tag}: it is not outstanding "
        f"(already settled, or delivered to another consumer)"
    )
