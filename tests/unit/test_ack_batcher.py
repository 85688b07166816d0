"""AckBatcher: coalescing, late acks, rejects, auto-flush, errors, reset, failing callbacks.

Every test runs against the compiled module and its pure twin (the ``impl`` fixture); the
property test at the end checks random interleavings against a model broker.
"""

from __future__ import annotations

import tracemalloc
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import ImplLoader, load_impl

Send = tuple[str, int, bool]


class ConnectionLost(Exception):
    pass


class Recorder:
    """The two callbacks; records ``("ack", tag, multiple)`` / ``("reject", tag, requeue)``."""

    def __init__(self) -> None:
        self.sent: list[Send] = []
        self.fail_at: int | None = None  # raise on this send (0-based count from now on)

    def _record(self, kind: str, tag: int, flag: bool) -> None:
        if self.fail_at is not None:
            if self.fail_at == 0:
                self.fail_at = None
                raise ConnectionLost(f"{kind} {tag}")
            self.fail_at -= 1
        self.sent.append((kind, tag, flag))

    def ack(self, tag: int, multiple: bool) -> None:
        self._record("ack", tag, multiple)

    def reject(self, tag: int, requeue: bool) -> None:
        self._record("reject", tag, requeue)

    def take(self) -> list[Send]:
        sent, self.sent = self.sent, []
        return sent


def make(impl: ImplLoader, max_batch: int = 64, delivered: int = 0) -> tuple[Any, Recorder]:
    rec = Recorder()
    batcher = impl("consumer").AckBatcher(rec.ack, rec.reject, max_batch)
    for tag in range(1, delivered + 1):
        batcher.delivered(tag)
    return batcher, rec


def counts(batcher: Any) -> tuple[int, int]:
    return batcher.pending, batcher.outstanding


# -- coalescing ------------------------------------------------------------------------------


def test_in_order_early_acks_coalesce_into_one_multiple_ack_per_batch(impl: ImplLoader) -> None:
    batcher, rec = make(impl, max_batch=64)
    for tag in range(1, 161):
        batcher.delivered(tag)
        batcher.ack(tag)
    assert rec.take() == [("ack", 64, True), ("ack", 128, True)]
    assert counts(batcher) == (32, 32)
    assert batcher.flush() == 32
    assert rec.take() == [("ack", 160, True)]
    assert counts(batcher) == (0, 0)


def test_a_run_of_one_is_acked_with_multiple_false(impl: ImplLoader) -> None:
    batcher, rec = make(impl, delivered=2)
    batcher.ack(1)
    assert batcher.flush() == 1
    assert rec.take() == [("ack", 1, False)]
    assert counts(batcher) == (0, 1)


def test_flush_with_nothing_pending_sends_nothing(impl: ImplLoader) -> None:
    batcher, rec = make(impl, delivered=3)
    assert batcher.flush() == 0
    batcher.ack(2)
    batcher.ack(3)
    assert batcher.flush() == 2
    assert batcher.flush() == 0
    assert rec.take() == [("ack", 2, False), ("ack", 3, False)]


def test_late_acks_out_of_order_coalesce_once_the_run_is_closed(impl: ImplLoader) -> None:
    batcher, rec = make(impl, delivered=4)
    for tag in (4, 2, 3, 1):
        batcher.ack(tag)
    assert counts(batcher) == (4, 4)
    assert batcher.flush() == 4
    assert rec.take() == [("ack", 4, True)]
    assert counts(batcher) == (0, 0)


def test_flush_with_a_gap_acks_beyond_it_one_by_one(impl: ImplLoader) -> None:
    batcher, rec = make(impl, delivered=6)
    for tag in (6, 1, 4, 2):
        batcher.ack(tag)
    assert batcher.flush() == 4
    # 3 and 5 are still running: the multiple-ack stops at 2, 4 and 6 go alone
    assert rec.take() == [("ack", 2, True), ("ack", 4, False), ("ack", 6, False)]
    assert counts(batcher) == (0, 2)


def test_a_long_running_head_does_not_hold_back_later_acks(impl: ImplLoader) -> None:
    batcher, rec = make(impl, delivered=5)
    for tag in (3, 5, 2):
        batcher.ack(tag)
    assert batcher.flush() == 3
    assert rec.take() == [("ack", 2, False), ("ack", 3, False), ("ack", 5, False)]
    batcher.ack(1)
    batcher.ack(4)
    # 2, 3 and 5 are settled, so the run from 1 reaches 4 (and 5 is not named again)
    assert batcher.flush() == 2
    assert rec.take() == [("ack", 4, True)]
    assert counts(batcher) == (0, 0)


def test_a_reject_is_sent_at_once_and_skipped_inside_a_run(impl: ImplLoader) -> None:
    batcher, rec = make(impl, delivered=5)
    batcher.ack(1)
    batcher.ack(2)
    batcher.reject(3, True)
    assert rec.take() == [("reject", 3, True)]
    batcher.ack(4)
    batcher.ack(5)
    assert counts(batcher) == (4, 4)
    assert batcher.flush() == 4
    assert rec.take() == [("ack", 5, True)]
    assert counts(batcher) == (0, 0)


def test_a_run_never_ends_on_a_rejected_delivery(impl: ImplLoader) -> None:
    batcher, rec = make(impl, delivered=4)
    batcher.ack(1)
    batcher.ack(2)
    batcher.reject(3, False)
    assert batcher.flush() == 2
    assert rec.take() == [("reject", 3, False), ("ack", 2, True)]
    assert counts(batcher) == (0, 1)
    batcher.ack(4)
    batcher.flush()
    assert rec.take() == [("ack", 4, False)]


def test_rejecting_the_head_moves_the_run_start(impl: ImplLoader) -> None:
    batcher, rec = make(impl, delivered=3)
    batcher.reject(1, False)
    batcher.ack(2)
    batcher.ack(3)
    assert batcher.flush() == 2
    assert rec.take() == [("reject", 1, False), ("ack", 3, True)]


def test_requeue_is_passed_as_a_bool(impl: ImplLoader) -> None:
    batcher, rec = make(impl, delivered=2)
    batcher.reject(1, 1)  # type: ignore[arg-type]
    batcher.reject(2, 0)  # type: ignore[arg-type]
    assert rec.take() == [("reject", 1, True), ("reject", 2, False)]


def test_skipped_tags_are_never_covered_by_a_multiple_ack(impl: ImplLoader) -> None:
    """A tag the batcher never saw may be another consumer's unacked delivery."""
    batcher, rec = make(impl)
    for tag in (1, 2, 4, 5):
        batcher.delivered(tag)
    for tag in (1, 2, 4, 5):
        batcher.ack(tag)
    assert batcher.flush() == 4
    assert rec.take() == [("ack", 2, True), ("ack", 4, False), ("ack", 5, False)]
    # 3 may still be unacked on the channel: nothing above it is coalesced any more
    batcher.delivered(6)
    batcher.delivered(7)
    batcher.ack(6)
    batcher.ack(7)
    batcher.flush()
    assert rec.take() == [("ack", 6, False), ("ack", 7, False)]
    # a new channel starts clean
    batcher.reset()
    for tag in (1, 2):
        batcher.delivered(tag)
        batcher.ack(tag)
    batcher.flush()
    assert rec.take() == [("ack", 2, True)]


def test_a_channel_that_starts_above_1_is_not_coalesced(impl: ImplLoader) -> None:
    batcher, rec = make(impl)
    batcher.delivered(3)
    batcher.delivered(4)
    batcher.ack(3)
    batcher.ack(4)
    batcher.flush()
    assert rec.take() == [("ack", 3, False), ("ack", 4, False)]


def test_settled_entries_squeezed_out_keep_the_run_joined(impl: ImplLoader) -> None:
    """Thousands of late acks behind one long task: the buffer compacts, runs stay exact."""
    batcher, rec = make(impl, max_batch=16)
    batcher.delivered(1)
    for tag in range(2, 5002):
        batcher.delivered(tag)
        batcher.ack(tag)
    batcher.flush()
    assert all(multiple is False for _, _, multiple in rec.take())
    assert counts(batcher) == (0, 1)
    for tag in range(5002, 5010):
        batcher.delivered(tag)
        batcher.ack(tag)
    batcher.ack(1)
    assert batcher.flush() == 9
    assert rec.take() == [("ack", 5009, True)]
    assert counts(batcher) == (0, 0)
    batcher.delivered(5010)
    batcher.delivered(5011)
    batcher.ack(5010)
    batcher.ack(5011)
    batcher.flush()
    assert rec.take() == [("ack", 5011, True)]


def test_a_skipped_tag_squeezed_out_still_stops_the_run(impl: ImplLoader) -> None:
    batcher, rec = make(impl, max_batch=8)
    batcher.delivered(1)  # runs for a long time
    for tag in range(2, 1002):
        if tag != 3:  # 3 went to another consumer on the channel and may stay unacked
            batcher.delivered(tag)
            batcher.ack(tag)
    batcher.flush()
    assert {multiple for _, _, multiple in rec.take()} == {False}
    batcher.delivered(1002)
    batcher.ack(1002)
    batcher.ack(1)
    assert batcher.flush() == 2
    # a multiple-ack of 1002 would have acked 3 as well
    assert rec.take() == [("ack", 1, False), ("ack", 1002, False)]


def test_a_skipped_tag_squeezed_out_stops_the_run_at_the_next_live_one(
    impl: ImplLoader,
) -> None:
    batcher, rec = make(impl, max_batch=8)
    for tag in (1, 2, 4, 5):  # 3 went to another consumer; 1 and 5 run for a long time
        batcher.delivered(tag)
    batcher.ack(2)
    batcher.ack(4)
    for tag in range(6, 1006):
        batcher.delivered(tag)
        batcher.ack(tag)
    batcher.flush()
    rec.take()
    batcher.ack(5)
    batcher.ack(1)
    assert batcher.flush() == 2
    assert rec.take() == [("ack", 1, False), ("ack", 5, False)]


def test_memory_follows_outstanding_deliveries_not_volume(impl: ImplLoader) -> None:
    batcher, rec = make(impl, max_batch=64)
    batcher.delivered(1)  # never finishes while the rest stream through

    def stream(first: int, last: int) -> None:
        for tag in range(first, last):
            batcher.delivered(tag)
            batcher.ack(tag)
            if tag % 100 == 0:
                rec.sent.clear()

    stream(2, 20_000)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        stream(20_000, 220_000)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 16_384, grown
    batcher.flush()
    assert counts(batcher) == (0, 1)


# -- automatic flush ---------------------------------------------------------------------------


def test_ack_flushes_when_max_batch_acks_are_pending(impl: ImplLoader) -> None:
    batcher, rec = make(impl, max_batch=3, delivered=5)
    batcher.ack(1)
    batcher.ack(2)
    assert rec.take() == []
    batcher.ack(3)
    assert rec.take() == [("ack", 3, True)]
    batcher.ack(5)
    batcher.ack(4)
    assert rec.take() == []
    assert batcher.pending == 2
    batcher.flush()
    assert rec.take() == [("ack", 5, True)]


def test_auto_flush_behind_a_gap_sends_individual_acks(impl: ImplLoader) -> None:
    batcher, rec = make(impl, max_batch=2, delivered=3)
    batcher.ack(3)
    batcher.ack(2)
    assert rec.take() == [("ack", 2, False), ("ack", 3, False)]
    assert counts(batcher) == (0, 1)


def test_max_batch_of_one_acks_each_delivery_at_once(impl: ImplLoader) -> None:
    batcher, rec = make(impl, max_batch=1, delivered=2)
    batcher.ack(1)
    batcher.ack(2)
    assert rec.take() == [("ack", 1, False), ("ack", 2, False)]
    assert batcher.max_batch == 1


@pytest.mark.parametrize("max_batch", [0, -1])
def test_max_batch_must_be_positive(impl: ImplLoader, max_batch: int) -> None:
    with pytest.raises(ValueError, match=f"max_batch must be at least 1, got {max_batch}"):
        make(impl, max_batch=max_batch)


# -- errors ----------------------------------------------------------------------------------


def test_delivered_tags_must_increase_from_1(impl: ImplLoader) -> None:
    batcher, _ = make(impl, delivered=5)
    with pytest.raises(ValueError, match="cannot accept delivery tag 5: not above the last"):
        batcher.delivered(5)
    with pytest.raises(ValueError, match="cannot accept delivery tag 3: not above the last"):
        batcher.delivered(3)
    fresh, _ = make(impl)
    for tag in (0, -4):
        with pytest.raises(ValueError, match=f"cannot accept delivery tag {tag}: tags start at 1"):
            fresh.delivered(tag)
    assert counts(batcher) == (0, 5)
    assert counts(fresh) == (0, 0)


@pytest.mark.parametrize("op", ["ack", "reject"])
def test_settling_a_tag_never_delivered_raises(impl: ImplLoader, op: str) -> None:
    batcher, rec = make(impl, delivered=3)
    call = batcher.ack if op == "ack" else lambda tag: batcher.reject(tag, False)
    for tag in (4, 0, -1):
        with pytest.raises(ValueError, match=f"cannot {op} delivery tag {tag}: it was never"):
            call(tag)
    empty, _ = make(impl)
    with pytest.raises(ValueError, match=f"cannot {op} delivery tag 1: it was never delivered"):
        (empty.ack if op == "ack" else lambda tag: empty.reject(tag, True))(1)
    assert counts(batcher) == (0, 3)
    assert rec.take() == []


@pytest.mark.parametrize("op", ["ack", "reject"])
def test_settling_a_tag_twice_raises(impl: ImplLoader, op: str) -> None:
    batcher, rec = make(impl, delivered=4)
    batcher.ack(1)
    batcher.flush()
    batcher.reject(3, False)
    call = batcher.ack if op == "ack" else lambda tag: batcher.reject(tag, False)
    for tag in (1, 3):
        with pytest.raises(ValueError, match=f"cannot {op} delivery tag {tag}: it is not outs"):
            call(tag)
    batcher.ack(2)
    with pytest.raises(ValueError, match=f"cannot {op} delivery tag 2: it is already acked"):
        call(2)
    assert counts(batcher) == (1, 2)
    assert rec.take() == [("ack", 1, False), ("reject", 3, False)]


def test_a_skipped_tag_is_not_outstanding(impl: ImplLoader) -> None:
    batcher, _ = make(impl)
    batcher.delivered(1)
    batcher.delivered(3)
    with pytest.raises(ValueError, match="cannot ack delivery tag 2: it is not outstanding"):
        batcher.ack(2)


def test_tags_must_be_64_bit_integers(impl: ImplLoader) -> None:
    batcher, _ = make(impl, delivered=1)
    for call in (batcher.delivered, batcher.ack, lambda tag: batcher.reject(tag, False)):
        for tag in (2**63, -(2**63) - 1):
            with pytest.raises(OverflowError, match=f"delivery tag {tag} does not fit in a"):
                call(tag)
        for bad, name in ((1.0, "float"), ("1", "str"), (None, "NoneType")):
            with pytest.raises(TypeError, match=f"delivery tag must be an int, not {name}"):
                call(bad)
    assert counts(batcher) == (0, 1)


def test_tags_are_ints_and_int_subclasses_only(impl: ImplLoader) -> None:
    class Tag:
        def __index__(self) -> int:
            return 1

    class BigTag(int):
        pass

    batcher, rec = make(impl)
    with pytest.raises(TypeError, match="delivery tag must be an int, not Tag"):
        batcher.delivered(Tag())  # type: ignore[arg-type]
    batcher.delivered(BigTag(1))
    with pytest.raises(ValueError, match="cannot accept delivery tag 1: not above"):
        batcher.delivered(True)
    batcher.ack(BigTag(1))
    batcher.flush()
    sent = rec.take()
    assert sent == [("ack", 1, False)]
    assert type(sent[0][1]) is int


# -- failing callbacks ---------------------------------------------------------------------


def test_send_ack_failing_mid_flush_leaves_the_unsent_ones_pending(impl: ImplLoader) -> None:
    batcher, rec = make(impl, delivered=6)
    for tag in (1, 2, 4, 6):
        batcher.ack(tag)
    rec.fail_at = 1  # the multiple-ack for 1-2 goes out, the ack for 4 fails
    with pytest.raises(ConnectionLost, match="ack 4"):
        batcher.flush()
    assert rec.take() == [("ack", 2, True)]
    assert counts(batcher) == (2, 4)
    # a transient failure: flushing again sends exactly what is left
    assert batcher.flush() == 2
    assert rec.take() == [("ack", 4, False), ("ack", 6, False)]
    assert batcher.reset() == [3, 5]


def test_send_ack_failing_on_the_run_changes_nothing(impl: ImplLoader) -> None:
    batcher, rec = make(impl, delivered=4)
    for tag in (1, 2, 3):
        batcher.ack(tag)
    rec.fail_at = 0
    with pytest.raises(ConnectionLost):
        batcher.flush()
    assert counts(batcher) == (3, 4)
    assert batcher.reset() == [1, 2, 3, 4]
    assert counts(batcher) == (0, 0)
    assert rec.take() == []


def test_auto_flush_failure_propagates_from_ack_and_keeps_the_tag(impl: ImplLoader) -> None:
    batcher, rec = make(impl, max_batch=2, delivered=2)
    batcher.ack(1)
    rec.fail_at = 0
    with pytest.raises(ConnectionLost):
        batcher.ack(2)
    assert counts(batcher) == (2, 2)
    with pytest.raises(ValueError, match="already acked"):
        batcher.ack(2)
    assert batcher.flush() == 2
    assert rec.take() == [("ack", 2, True)]


def test_send_reject_failing_keeps_the_delivery_outstanding(impl: ImplLoader) -> None:
    batcher, rec = make(impl, delivered=2)
    rec.fail_at = 0
    with pytest.raises(ConnectionLost, match="reject 1"):
        batcher.reject(1, True)
    assert counts(batcher) == (0, 2)
    batcher.reject(1, True)
    assert rec.take() == [("reject", 1, True)]
    assert batcher.reset() == [2]


def test_calling_back_into_the_batcher_from_a_callback_raises(impl: ImplLoader) -> None:
    batcher: Any = None

    def send_ack(tag: int, multiple: bool) -> None:
        batcher.delivered(99)

    def send_reject(tag: int, requeue: bool) -> None:
        batcher.flush()

    batcher = impl("consumer").AckBatcher(send_ack, send_reject)
    for tag in (1, 2):
        batcher.delivered(tag)
    batcher.ack(1)
    with pytest.raises(RuntimeError, match="ack batcher called from inside its own send_ack"):
        batcher.flush()
    with pytest.raises(RuntimeError, match="ack batcher called from inside"):
        batcher.reject(2, False)
    assert counts(batcher) == (1, 2)
    assert batcher.reset() == [1, 2]


# -- reset -----------------------------------------------------------------------------------


def test_reset_returns_every_unsettled_tag_and_starts_a_new_channel(impl: ImplLoader) -> None:
    batcher, rec = make(impl, delivered=8)
    batcher.ack(1)
    batcher.ack(2)
    batcher.flush()
    batcher.reject(4, True)
    batcher.ack(5)
    batcher.ack(7)  # pending, never sent: still unsettled
    rec.take()
    assert batcher.reset() == [3, 5, 6, 7, 8]
    assert rec.take() == []
    assert counts(batcher) == (0, 0)
    assert batcher.reset() == []
    with pytest.raises(ValueError, match="cannot ack delivery tag 3: it was never delivered"):
        batcher.ack(3)
    for tag in (1, 2, 3):
        batcher.delivered(tag)
        batcher.ack(tag)
    assert batcher.flush() == 3
    assert rec.take() == [("ack", 3, True)]


def test_reset_after_a_grown_buffer(impl: ImplLoader) -> None:
    batcher, _ = make(impl, max_batch=10_000, delivered=5_000)
    for tag in range(1, 5_001, 2):
        batcher.ack(tag)
    assert batcher.reset() == list(range(1, 5_001))
    batcher.delivered(1)
    assert batcher.reset() == [1]


# -- property: random interleavings against a model broker ---------------------------------


class ModelChannel:
    """What a broker's channel does with each ack and reject, checked against the worker.

    ``ours`` are the deliveries given to the batcher, ``foreign`` the tags it skipped (another
    consumer's deliveries, never acked here), ``allowed`` the deliveries the worker called
    ``ack()`` for. Every ack and reject that reaches the channel is checked on arrival.
    """

    def __init__(self) -> None:
        self.last = 0
        self.unacked: set[int] = set()
        self.ours: list[int] = []
        self.open: set[int] = set()  # ours and not settled
        self.foreign: set[int] = set()
        self.allowed: set[int] = set()
        self.rejected: set[int] = set()
        self.settled: dict[int, str] = {}
        self.fail_next = False

    def _maybe_fail(self, what: str) -> None:
        if self.fail_next:
            self.fail_next = False
            raise ConnectionLost(what)

    def send_ack(self, tag: int, multiple: bool) -> None:
        self._maybe_fail(f"ack {tag}")
        assert type(tag) is int
        assert type(multiple) is bool
        # RabbitMQ closes the channel for an ack naming a tag that is not unacked
        assert tag in self.unacked, f"ack names tag {tag}, which is not unacked"
        covered = {t for t in self.unacked if t <= tag} if multiple else {tag}
        assert not covered & self.foreign, f"ack {tag} covers another consumer's {covered}"
        early = covered - self.allowed
        assert not early, f"ack {tag} covers {early} before the worker allowed it"
        if multiple:
            assert len(covered) >= 2, f"multiple-ack {tag} covers only {covered}"
        for t in covered:
            assert t not in self.settled
            self.settled[t] = "ack"
        self.unacked -= covered
        self.open -= covered
        self.allowed -= covered

    def send_reject(self, tag: int, requeue: bool) -> None:
        self._maybe_fail(f"reject {tag}")
        assert type(requeue) is bool
        assert tag in self.unacked and tag not in self.foreign
        assert tag not in self.allowed, f"reject {tag} after the worker allowed its ack"
        self.unacked.remove(tag)
        self.open.remove(tag)
        self.settled[tag] = "reject"

    def deliver(self, skip: int) -> int:
        for _ in range(skip):
            self.last += 1
            self.foreign.add(self.last)
            self.unacked.add(self.last)
        self.last += 1
        self.unacked.add(self.last)
        self.ours.append(self.last)
        self.open.add(self.last)
        return self.last

    def open_ours(self) -> list[int]:
        return sorted(self.open)

    def running(self) -> list[int]:
        """Ours, unsettled, and not yet allowed to be acked: may be acked or rejected."""
        return sorted(self.open - self.allowed)


OPS = ["deliver"] * 4 + ["ack", "ack", "ack_newest", "reject", "flush", "fail", "skip", "burst"]


@pytest.mark.parametrize("kind", ["compiled", "pure"])
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_interleavings_settle_every_delivery_exactly_once(
    kind: str, data: st.DataObject
) -> None:
    module = load_impl(kind, "consumer")
    max_batch = data.draw(st.integers(1, 12), label="max_batch")
    channel = ModelChannel()
    batcher = module.AckBatcher(
        lambda t, m: channel.send_ack(t, m), lambda t, r: channel.send_reject(t, r), max_batch
    )
    steps = data.draw(st.integers(0, 150), label="steps")
    for _ in range(steps):
        op = data.draw(st.sampled_from(OPS))
        try:
            if op in ("deliver", "skip"):
                batcher.delivered(channel.deliver(1 if op == "skip" else 0))
            elif op.startswith("ack") and channel.running():
                # acking the newest often leaves old ones running: gaps, and compaction
                running = channel.running()
                tag = running[-1] if op == "ack_newest" else data.draw(st.sampled_from(running))
                channel.allowed.add(tag)
                batcher.ack(tag)
            elif op == "reject" and channel.running():
                tag = data.draw(st.sampled_from(channel.running()))
                batcher.reject(tag, data.draw(st.booleans()))
            elif op == "burst":
                # short tasks stream past the running ones (and one foreign tag, maybe)
                count = data.draw(st.integers(1, 80), label="burst")
                foreign_at = data.draw(st.integers(0, count), label="foreign at")
                for i in range(count):
                    tag = channel.deliver(1 if i == foreign_at else 0)
                    batcher.delivered(tag)
                    channel.allowed.add(tag)
                    batcher.ack(tag)
            elif op == "flush":
                pending = len(channel.allowed)
                assert batcher.flush() == pending
            elif op == "fail":
                channel.fail_next = True
        except ConnectionLost:
            # the connection died: everything unsettled comes back, then a new channel opens
            assert batcher.reset() == channel.open_ours()
            assert (batcher.pending, batcher.outstanding) == (0, 0)
            channel = ModelChannel()
            continue
        assert batcher.pending == len(channel.allowed) < max_batch
        assert batcher.outstanding == len(channel.open)
    # the end: every running task finishes in random order, then a final flush
    channel.fail_next = False
    rest = channel.running()
    for tag in data.draw(st.permutations(rest), label="finish order"):
        channel.allowed.add(tag)
        batcher.ack(tag)
    batcher.flush()
    assert (batcher.pending, batcher.outstanding) == (0, 0)
    assert set(channel.ours) <= set(channel.settled)
    assert channel.unacked == channel.foreign
    assert batcher.reset() == []
