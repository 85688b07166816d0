"""The worker end to end on the embedded broker (solo pool, in-process)."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from celeriac import Celery, MaxRetriesExceededError, states
from celeriac.errors import NotRegistered, TaskRevokedError
from celeriac.testing import start_worker


def test_ten_thousand_tasks_complete_with_right_values(app: Celery) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    with start_worker(app):
        results = [add.delay(i, i) for i in range(10_000)]
        values = [r.get(timeout=30) for r in results]
    assert values == [2 * i for i in range(10_000)]


def test_bound_task_sees_its_request(app: Celery) -> None:
    seen: dict[str, Any] = {}

    @app.task(bind=True)
    def whoami(self: Any, x: int, flag: bool = False) -> str:
        r = self.request
        seen.update(
            id=r.id,
            args=r.args,
            kwargs=r.kwargs,
            retries=r.retries,
            hostname=r.hostname,
            root_id=r.root_id,
            parent_id=r.parent_id,
            delivery_info=r.delivery_info,
            is_eager=r.is_eager,
            correlation_id=r.correlation_id,
            reply_to=r.reply_to,
            custom=(r.headers or {}).get("custom"),
        )
        return str(r.id)

    with start_worker(app, hostname="w1@testhost") as worker:
        result = whoami.apply_async((1,), {"flag": True}, headers={"custom": 1.5})
        assert result.get(timeout=5) == result.id
        assert worker.hostname == "w1@testhost"
    assert seen["id"] == result.id
    assert seen["args"] == [1]
    assert seen["kwargs"] == {"flag": True}
    assert seen["retries"] == 0
    assert seen["hostname"] == "w1@testhost"
    assert seen["root_id"] == result.id
    assert seen["parent_id"] is None
    assert seen["is_eager"] is False
    assert seen["correlation_id"] == result.id
    assert seen["reply_to"] == app.oid
    assert seen["delivery_info"]["routing_key"] == "celery"
    assert seen["custom"] == 1.5


class CustomError(Exception):
    pass


def test_failing_task_reraises_original_type(app: Celery) -> None:
    @app.task
    def boom(n: int) -> None:
        raise CustomError("boom", n)

    @app.task
    def key(n: int) -> None:
        raise KeyError(n)

    with start_worker(app):
        result = boom.delay(42)
        with pytest.raises(CustomError) as info:
            result.get(timeout=5)
        assert info.value.args == ("boom", 42)
        assert result.state == states.FAILURE
        assert result.failed()
        assert "CustomError" in (result.traceback or "")
        with pytest.raises(KeyError):
            key.delay(1).get(timeout=5)
        # propagate=False returns the exception instead
        assert isinstance(result.get(propagate=False), CustomError)


def test_retry_until_max_retries_exceeded(app: Celery) -> None:
    attempts: list[int] = []

    @app.task(bind=True, max_retries=3)
    def flaky(self: Any) -> None:
        attempts.append(self.request.retries)
        raise self.retry(countdown=0.01)

    with start_worker(app):
        result = flaky.delay()
        with pytest.raises(MaxRetriesExceededError):
            result.get(timeout=10)
    assert attempts == [0, 1, 2, 3]


def test_retry_succeeds_and_reraises_given_exc(app: Celery) -> None:
    @app.task(bind=True, max_retries=2, default_retry_delay=0.01)
    def eventually(self: Any, ok_at: int) -> int:
        if self.request.retries < ok_at:
            raise self.retry()
        return int(self.request.retries)

    @app.task(bind=True, max_retries=1)
    def gives_exc(self: Any) -> None:
        try:
            raise ValueError("original")
        except ValueError as exc:
            raise self.retry(exc=exc, countdown=0.01) from None

    with start_worker(app):
        assert eventually.delay(2).get(timeout=10) == 2
        with pytest.raises(ValueError, match="original"):
            gives_exc.delay().get(timeout=10)


def test_autoretry_for_with_backoff(app: Celery) -> None:
    calls: list[int] = []

    @app.task(
        bind=True,
        autoretry_for=(ConnectionError,),
        retry_backoff=0.01,
        retry_jitter=False,
        max_retries=4,
    )
    def shaky(self: Any) -> int:
        calls.append(self.request.retries)
        if len(calls) < 3:
            raise ConnectionError("down")
        return len(calls)

    with start_worker(app):
        assert shaky.delay().get(timeout=10) == 3
    assert calls == [0, 1, 2]


def test_countdown_runs_no_earlier(app: Celery) -> None:
    ran_at: list[float] = []

    @app.task
    def stamp() -> None:
        ran_at.append(time.time())

    @app.task
    def quick(x: int) -> int:
        return x

    with start_worker(app):
        sent = time.time()
        delayed = stamp.apply_async(countdown=0.5)
        # the held ETA task does not block others behind it
        assert quick.delay(7).get(timeout=5) == 7
        assert not ran_at
        delayed.get(timeout=5)
    assert ran_at[0] - sent >= 0.5


def test_expired_task_is_revoked(app: Celery) -> None:
    @app.task
    def never() -> str:
        return "ran"

    with start_worker(app):
        from datetime import datetime, timedelta, timezone

        past = datetime.now(timezone.utc) - timedelta(seconds=5)
        result = never.apply_async(expires=past)
        with pytest.raises(TaskRevokedError, match="expired"):
            result.get(timeout=5)
        assert result.state == states.REVOKED
        # expiring while held for an ETA is revoked at execution time
        late = never.apply_async(countdown=0.3, expires=0.1)
        with pytest.raises(TaskRevokedError):
            late.get(timeout=5)


def test_bad_messages_do_not_stop_worker_or_lose_neighbours(
    app: Celery, caplog: pytest.LogCaptureFixture
) -> None:
    @app.task
    def echo(x: int) -> int:
        return x

    caplog.set_level(logging.INFO, logger="celeriac")
    with start_worker(app) as worker:
        before = [echo.delay(i) for i in range(50)]
        unknown = app.send_task("no.such.task", (1,))
        transport = app.producer_transport()
        good = echo.delay(-1)
        # a v2 message whose body is not JSON
        headers = dict(transport_headers(app, echo.name, "bad-body"))
        transport.publish(
            b"{not json",
            "",
            "celery",
            headers,
            {"content_type": "application/json", "content_encoding": "utf-8"},
        )
        # a message that is not a task at all
        transport.publish(
            b'"hello"',
            "",
            "celery",
            None,
            {"content_type": "application/json", "content_encoding": "utf-8"},
        )
        # pickle is not accepted by default: refused without being unpickled
        transport.publish(
            b"\x80\x04N.",
            "",
            "celery",
            dict(transport_headers(app, echo.name, "pickled")),
            {"content_type": "application/x-python-serialize", "content_encoding": "binary"},
        )
        after = [echo.delay(i) for i in range(50, 100)]
        assert [r.get(timeout=10) for r in before + after] == list(range(100))
        assert good.get(timeout=5) == -1
        with pytest.raises(NotRegistered):
            unknown.get(timeout=5)
        assert worker.consumer.transport is not None
    text = caplog.text
    assert "unregistered task of type 'no.such.task'" in text
    assert "can't decode message body" in text
    assert "unknown message" in text
    assert "invalid task message" in text
    # nothing left unacked or waiting: every message was settled one way or the other
    from celeriac.transports.memory import MemoryBroker

    broker = MemoryBroker.get(app.broker_url.split("://", 1)[1])
    assert broker.queue_depth("celery") == 0


def transport_headers(app: Celery, name: str, task_id: str) -> dict[str, Any]:
    from celeriac.protocol import build_task_message

    return build_task_message(name, task_id, [], {}).headers


def test_acks_late_failure_and_ignore_result(app: Celery) -> None:
    @app.task(acks_late=True)
    def late(x: int) -> int:
        if x < 0:
            raise ValueError(x)
        return x * 3

    @app.task(ignore_result=True)
    def silent() -> int:
        return 1

    with start_worker(app):
        assert late.delay(2).get(timeout=5) == 6
        with pytest.raises(ValueError):
            late.delay(-1).get(timeout=5)
        r = silent.delay()
        marker = late.delay(1)
        marker.get(timeout=5)
        assert r.state == states.PENDING  # nothing stored


def test_chain_and_link_callbacks(app: Celery) -> None:
    from celeriac import chain

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    with start_worker(app):
        result = chain(add.s(1, 2), add.s(3), add.s(4)).apply_async()
        assert result.get(timeout=5) == 10
        linked = add.apply_async((1, 1), link=add.s(10))
        assert linked.get(timeout=5) == 2
        child_id = linked.children[0][0][0]
        assert app.AsyncResult(child_id).get(timeout=5) == 12
        # a failing chain step fails the rest of the chain, so waiters do not hang
        failing = chain(add.s(1, "x"), add.s(1)).apply_async()
        with pytest.raises(TypeError):
            failing.get(timeout=5)
