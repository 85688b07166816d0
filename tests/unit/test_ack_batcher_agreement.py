"""Property test: the compiled AckBatcher and its pure twin agree, errors included.

Both run the same random operation sequence (valid and invalid tags, rejects, flushes, resets,
callbacks that fail); every call's result or exception, every ack and reject sent, and the
counters after each call must be identical.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.conftest import load_impl

Op = tuple[Any, ...]


class ConnectionLost(Exception):
    pass


@pytest.fixture(scope="module")
def both() -> tuple[ModuleType, ModuleType]:
    return load_impl("compiled", "consumer"), load_impl("pure", "consumer")


def run(module: ModuleType, max_batch: int, ops: list[Op]) -> list[Any]:
    """Apply ``ops`` to a fresh batcher; return everything observable, in order."""
    log: list[Any] = []
    fail = [-1]  # fail the send after this many more (-1: never)

    def sender(kind: str) -> Any:
        def send(tag: int, flag: bool) -> None:
            if fail[0] == 0:
                fail[0] = -1
                raise ConnectionLost(f"{kind} {tag}")
            if fail[0] > 0:
                fail[0] -= 1
            log.append((kind, type(tag).__name__, tag, flag))

        return send

    batcher = module.AckBatcher(sender("ack"), sender("reject"), max_batch)
    last = 0
    running: list[int] = []  # delivered, and neither ack() nor reject() succeeded for it yet
    for op in ops:
        name = op[0]
        try:
            if name == "delivered":
                tag = last + op[1]
                result: Any = batcher.delivered(tag)
                last = tag
                running.append(tag)
            elif name in ("ack", "ack_running"):
                if name == "ack":
                    tag = last - op[1]
                elif running:
                    tag = running[op[1] % len(running)]
                else:
                    tag = 1
                result = batcher.ack(tag)
                if tag in running:  # a tag delivered by a "raw" op is not listed
                    running.remove(tag)
            elif name == "reject":
                tag = last - op[1]
                result = batcher.reject(tag, op[2])
                if tag in running:
                    running.remove(tag)
            elif name == "raw":
                result = getattr(batcher, op[1])(*op[2:])
            elif name == "flush":
                result = batcher.flush()
            elif name == "reset":
                result = batcher.reset()
                last = 0
                running.clear()
            else:
                fail[0] = op[1]
                result = None
        except Exception as exc:
            result = (type(exc).__name__, str(exc))
        log.append((op, result, batcher.pending, batcher.outstanding))
    fail[0] = -1
    log.append(("final", batcher.flush(), batcher.reset()))
    return log


bad_tags = st.sampled_from([0, -1, 2**63, -(2**63) - 1, 1.5, "3", None, True])
ops = st.one_of(
    # mostly the next tag, sometimes a skipped one, sometimes one that is not above the last
    st.tuples(st.just("delivered"), st.sampled_from([1, 1, 1, 1, 2, 3, 0, -1])),
    # tags counted back from the last delivered: mostly real ones, some settled or unknown
    st.tuples(st.just("ack"), st.integers(-2, 12)),
    # the oldest tasks still running finish (from the front of the list of running ones)
    st.tuples(st.just("ack_running"), st.integers(0, 3)),
    st.tuples(st.just("reject"), st.integers(-2, 12), st.sampled_from([True, False, 1, 0])),
    st.tuples(st.just("flush")),
    st.tuples(st.just("reset")),
    st.tuples(st.just("fail"), st.integers(0, 3)),
    st.tuples(st.just("raw"), st.sampled_from(["delivered", "ack"]), bad_tags),
    st.tuples(st.just("raw"), st.just("reject"), bad_tags, st.booleans()),
)
# long streams of short tasks (acked on arrival) past running ones, so both twins compact
# their buffers; each may open with a skipped tag or a task that keeps running
streams = st.lists(
    st.tuples(st.integers(1, 90), st.sampled_from([1, 1, 2]), st.booleans()).map(
        lambda p: (
            [("delivered", p[1])]
            + ([] if p[2] else [("ack", 0)])
            + [("delivered", 1), ("ack", 0)] * p[0]
        )
    ),
    max_size=6,
).map(lambda chunks: [op for chunk in chunks for op in chunk])


# A skipped tag (12) behind a running task (1) is squeezed out by compaction; the joined bit it
# clears must reach the next running task (19), else a multiple-ack of 19 would cover 12.
SQUEEZED_SKIP: list[Op] = [
    ("delivered", 1),
    *[("delivered", 1), ("ack", 0)] * 10,
    ("delivered", 2),
    ("ack", 0),
    *[("delivered", 1), ("ack", 0)] * 5,
    ("delivered", 1),
    *[("delivered", 1), ("ack", 0)] * 80,
    ("flush",),
    ("ack_running", 0),
    ("ack_running", 0),
    ("flush",),
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(max_batch=4, sequence=SQUEEZED_SKIP)
@given(
    max_batch=st.integers(1, 10),
    sequence=st.lists(st.one_of(ops.map(lambda op: [op]), streams), max_size=60).map(
        lambda parts: [op for part in parts for op in part]
    ),
)
def test_compiled_and_pure_agree(
    both: tuple[ModuleType, ModuleType], max_batch: int, sequence: list[Op]
) -> None:
    compiled, pure = both
    assert run(compiled, max_batch, sequence) == run(pure, max_batch, sequence)


@pytest.mark.parametrize("max_batch", [0, -3, 1.5, "2"])
def test_constructor_errors_agree(both: tuple[ModuleType, ModuleType], max_batch: Any) -> None:
    compiled, pure = both
    errors = []
    for module in (compiled, pure):
        with pytest.raises((ValueError, TypeError)) as info:
            module.AckBatcher(print, print, max_batch)
        errors.append((info.type, str(info.value)))
    assert errors[0] == errors[1]


def test_both_export_the_same_names(both: tuple[ModuleType, ModuleType]) -> None:
    compiled, pure = both
    assert compiled.__all__ == pure.__all__
    for name in ("max_batch", "pending", "outstanding", "delivered", "ack", "reject", "flush"):
        assert hasattr(compiled.AckBatcher, name)
        assert hasattr(pure.AckBatcher, name)
