"""The prefork supervisor codec and bookkeeping, both implementations, and their agreement."""

from __future__ import annotations

from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from celeriac.errors import ProtocolError
from tests.conftest import ImplLoader, load_impl


def _message(**over: Any) -> SimpleNamespace:
    fields: dict[str, Any] = {
        "headers": {"task": "t.add", "id": "abc", "retries": 2, "timelimit": [None, 1.5]},
        "body": b'[[1, 2], {}, {"callbacks": null}]',
        "content_type": "application/json",
        "content_encoding": "utf-8",
        "correlation_id": "abc",
        "reply_to": "reply.q",
        "priority": 3,
        "delivery_info": {"exchange": "", "routing_key": "celery", "redelivered": True},
    }
    fields.update(over)
    return SimpleNamespace(**fields)


def test_job_round_trip(impl: ImplLoader) -> None:
    sup = impl("supervisor")
    msg = _message()
    data = sup.encode_job(7, msg) + sup.encode_control(sup.STOP)
    dec = sup.JobDecoder()
    jobs = dec.feed(data[:5]) + dec.feed(data[5:-3]) + dec.feed(data[-3:])
    assert dec.pending == 0
    kind, job_id, props, headers, body, info = jobs[0]
    assert (kind, job_id, body) == (sup.JOB, 7, msg.body)
    assert headers == msg.headers
    assert props == {
        "content_type": "application/json",
        "content_encoding": "utf-8",
        "correlation_id": "abc",
        "reply_to": "reply.q",
        "priority": 3,
    }
    assert info == msg.delivery_info
    assert jobs[1] == (sup.STOP, 0, {}, None, b"", {})


def test_job_decodes_with_message_decoder(impl: ImplLoader) -> None:
    sup, message = impl("supervisor"), impl("message")
    job = sup.JobDecoder().feed(sup.encode_job(1, _message()))[0]
    decoder = message.MessageDecoder(lambda body, *_: __import__("json").loads(body))
    msg = decoder.decode(job[3], job[2], job[4], job[5], job[1])
    assert (msg.id, msg.name, msg.retries, msg.soft_time_limit) == ("abc", "t.add", 2, 1.5)
    assert msg.decode_body()[0] == [1, 2]


def test_completion_round_trip(impl: ImplLoader) -> None:
    sup = impl("supervisor")
    data = sup.encode_completion(sup.STARTED, 3, 1234, 0, 7_000_001) + sup.encode_completion(
        sup.DONE, 3, sup.REQUEUE, 51200, 7_000_450
    )
    assert len(data) == 2 * sup.COMPLETION_SIZE == 66
    dec = sup.CompletionDecoder()
    assert dec.feed(data[:38]) == [(sup.STARTED, 3, 1234, 0, 7_000_001)]
    assert dec.pending == 5
    assert dec.feed(data[38:]) == [(sup.DONE, 3, sup.REQUEUE, 51200, 7_000_450)]
    assert dec.feed(sup.encode_completion(sup.HELLO, 0, 1, 2)) == [(sup.HELLO, 0, 1, 2, 0)]


def test_errors(impl: ImplLoader) -> None:
    sup = impl("supervisor")
    with pytest.raises(ValueError, match="unknown kind 9"):
        sup.encode_control(9)
    with pytest.raises(ValueError, match="unknown kind 0"):
        sup.encode_completion(0, 1, 1, 1)
    with pytest.raises(OverflowError, match="job_id -1 is out of range"):
        sup.encode_job(-1, _message())
    with pytest.raises(TypeError, match="job_id must be an int"):
        sup.encode_job("1", _message())
    with pytest.raises(ProtocolError, match="cannot encode job 1"):
        sup.encode_job(1, _message(headers={"x": object()}))
    with pytest.raises(ProtocolError, match="bad record length 3"):
        sup.JobDecoder().feed(b"\x00\x00\x00\x03abc")
    with pytest.raises(ProtocolError, match="unknown kind 9"):
        sup.JobDecoder().feed(b"\x00\x00\x00\x09\x09" + bytes(8))
    with pytest.raises(ProtocolError, match="unknown kind 7"):
        sup.CompletionDecoder().feed(b"\x07" + bytes(32))
    with pytest.raises(OverflowError, match="at -1 is out of range"):
        sup.encode_completion(sup.DONE, 1, 1, 1, -1)


def test_child_slots(impl: ImplLoader) -> None:
    sup = impl("supervisor")
    slots = sup.ChildSlots()
    for job in (1, 2, 3):
        slots.sent(job)
    assert (slots.inflight, slots.running, slots.tasks_sent) == (3, 0, 3)
    assert not slots.started(2, 1.0)
    assert slots.started(1, 5.0)
    assert not slots.started(1, 6.0)
    assert (slots.running, slots.started_at) == (1, 5.0)
    assert slots.unstarted() == [2, 3]
    assert not slots.done(2)
    assert slots.done(1)
    assert (slots.running, slots.started_at, slots.tasks_done, slots.inflight) == (0, 0.0, 1, 2)
    assert slots.unstarted() == [2, 3]
    assert slots.started(2, 7.0)
    assert slots.clear() == [3]
    assert slots.inflight == 0
    with pytest.raises(ValueError, match="job id must be a positive int"):
        slots.sent(0)


# -- agreement ------------------------------------------------------------------------------

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**31), 2**31 - 1),
    st.text(max_size=20),
    st.floats(allow_nan=False),
)
_headers = st.dictionaries(st.text(min_size=1, max_size=10), _scalars, max_size=6)


def _outcome(fn: Any, *args: Any) -> Any:
    try:
        return ("ok", fn(*args))
    except Exception as exc:
        return ("err", type(exc), str(exc))


@pytest.fixture(scope="module")
def both() -> tuple[ModuleType, ModuleType]:
    return load_impl("compiled", "supervisor"), load_impl("pure", "supervisor")


@settings(max_examples=200, deadline=None)
@given(
    job_id=st.integers(-1, 2**64),
    headers=_headers,
    body=st.binary(max_size=64),
    rk=st.text(max_size=10),
    cuts=st.lists(st.integers(0, 300), max_size=4),
)
def test_agreement_jobs(
    both: tuple[ModuleType, ModuleType],
    job_id: int,
    headers: dict[str, Any],
    body: bytes,
    rk: str,
    cuts: list[int],
) -> None:
    compiled, pure = both
    msg = _message(headers=headers, body=body, delivery_info={"routing_key": rk})
    a, b = _outcome(compiled.encode_job, job_id, msg), _outcome(pure.encode_job, job_id, msg)
    assert a == b
    if a[0] != "ok":
        return
    data = a[1] + pure.encode_control(pure.STOP_NOW)
    decoders = compiled.JobDecoder(), pure.JobDecoder()
    prev = 0
    for cut in [*sorted(c for c in cuts if c < len(data)), len(data)]:
        chunk = data[prev:cut]
        prev = cut
        assert _outcome(decoders[0].feed, chunk) == _outcome(decoders[1].feed, chunk)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=80))
def test_agreement_garbage(both: tuple[ModuleType, ModuleType], data: bytes) -> None:
    compiled, pure = both
    assert _outcome(compiled.JobDecoder().feed, data) == _outcome(pure.JobDecoder().feed, data)
    assert _outcome(compiled.CompletionDecoder().feed, data) == _outcome(
        pure.CompletionDecoder().feed, data
    )


@settings(max_examples=200, deadline=None)
@given(
    kind=st.integers(0, 4),
    job_id=st.integers(-1, 2**64),
    value=st.integers(0, 2**64 - 1),
    rss=st.integers(0, 2**20),
    at=st.integers(-1, 2**64),
)
def test_agreement_completions(
    both: tuple[ModuleType, ModuleType], kind: int, job_id: int, value: int, rss: int, at: int
) -> None:
    compiled, pure = both
    a = _outcome(compiled.encode_completion, kind, job_id, value, rss, at)
    assert a == _outcome(pure.encode_completion, kind, job_id, value, rss, at)
    if a[0] == "ok":
        assert compiled.CompletionDecoder().feed(a[1]) == pure.CompletionDecoder().feed(a[1])


@settings(max_examples=200, deadline=None)
@given(ops=st.lists(st.tuples(st.sampled_from("sSdcu"), st.integers(0, 6)), max_size=30))
def test_agreement_slots(both: tuple[ModuleType, ModuleType], ops: list[tuple[str, int]]) -> None:
    slots = [mod.ChildSlots() for mod in both]
    for op, job in ops:
        results = []
        for s in slots:
            if op == "s":
                results.append(_outcome(s.sent, job))
            elif op == "S":
                results.append(_outcome(s.started, job, float(job)))
            elif op == "d":
                results.append(_outcome(s.done, job))
            elif op == "c":
                results.append(_outcome(s.clear))
            else:
                results.append(_outcome(s.unstarted))
            results.append((s.inflight, s.running, s.started_at, s.tasks_sent, s.tasks_done))
        assert results[:2] == results[2:]
