"""One Celery project, two workers: ``celery worker`` and ``celeriac worker`` pass the same tests.

The project (``tests/compat/celery_project``) is a plain ``celery.Celery`` app. Each worker
runs as a separate process started the same way (``python -m celery|celeriac -A proj worker``
with the same flags), on RabbitMQ and on a Redis broker, with the Redis result backend. The
tests send tasks with a Celery client and read what happened from the results and from a
Redis ledger the tasks and signal receivers write to.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from tests.compat.celery_run import Run

pytestmark = pytest.mark.integration

WORKERS = [
    pytest.param(("celery", "amqp", "prefork"), id="celery-rabbitmq-prefork"),
    pytest.param(("celery", "redis", "prefork"), id="celery-redis-prefork"),
    pytest.param(("celeriac", "amqp", "prefork"), id="celeriac-rabbitmq-prefork"),
    pytest.param(("celeriac", "redis", "prefork"), id="celeriac-redis-prefork"),
    pytest.param(("celeriac", "amqp", "threads"), id="celeriac-rabbitmq-threads"),
    pytest.param(("celeriac", "amqp", "solo"), id="celeriac-rabbitmq-solo"),
]


@pytest.fixture(scope="module", params=WORKERS)
def run(request: pytest.FixtureRequest) -> Iterator[Run]:
    kind, broker, pool = request.param
    made = Run(kind, broker, pool)
    try:
        made.start()
        yield made
    finally:
        made.stop()
        made.cleanup()


def wait_for(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


# -- plain, bound, routing


def test_plain_task(run: Run) -> None:
    assert run.send("cp.add", 2, 3).get(timeout=30) == 5


def test_bound_task_sees_its_request(run: Run) -> None:
    result = run.send("cp.whoami", 1, "two", kwargs={"k": [3]})
    info = result.get(timeout=20)
    assert info == {
        "id": result.id,
        "task": "cp.whoami",
        "retries": 0,
        "hostname": run.nodename,
        "is_eager": False,
        "routing_key": run.queue,
        "args": [1, "two"],
        "kwargs": {"k": [3]},
        "root_id": result.id,
        "name": "cp.whoami",
    }


def test_task_routes_and_task_queues(run: Run) -> None:
    # a topic exchange declared from task_queues, bound with ``cp.#``
    assert run.send("cp.routed").get(timeout=20) == "cp.routed.key"


def test_excluded_queue_is_not_consumed(run: Run) -> None:
    result = run.send("cp.excluded")
    assert run.send("cp.add", 1, 1).get(timeout=20) == 2
    time.sleep(0.3)
    assert result.state == "PENDING"
    assert run.messages_in(f"{run.queue}.excluded") == 1


# -- retries


def test_retry_with_countdown(run: Run) -> None:
    tag = uuid.uuid4().hex
    result = run.send("cp.retry_countdown", tag)
    assert result.get(timeout=20) == 2
    assert run.runs(tag) == 3
    assert wait_for(lambda: run.hash("signals", result.id).get("retry") == "2")


def test_retry_exhausted_raises_the_retried_exception(run: Run) -> None:
    result = run.send("cp.retry_exhausted")
    with pytest.raises(Exception) as info:
        result.get(timeout=20)
    assert type(info.value).__name__ == "ProjectError"
    assert info.value.args == ("gave up",)


def test_autoretry_with_backoff(run: Run) -> None:
    tag = uuid.uuid4().hex
    assert run.send("cp.autoretry", tag).get(timeout=20) == 2
    assert run.runs(tag) == 3


# -- Reject, Ignore, replace


def test_reject_without_requeue_is_a_failure(run: Run) -> None:
    tag = uuid.uuid4().hex
    result = run.send("cp.reject_drop", tag)
    assert wait_for(lambda: result.state == "FAILURE")
    assert type(result.result).__name__ == "Reject"
    assert run.runs(tag) == 1
    assert wait_for(lambda: run.hash("signals", result.id).get("failure:Reject") == "1")


def test_reject_with_requeue_runs_again(run: Run) -> None:
    tag = uuid.uuid4().hex
    assert run.send("cp.reject_requeue", tag).get(timeout=20) == "second time"
    assert run.runs(tag) == 2


def test_ignore_stores_nothing(run: Run) -> None:
    tag = uuid.uuid4().hex
    result = run.send("cp.ignore", tag)
    assert wait_for(lambda: run.hash("signals", result.id).get("postrun:IGNORED"))
    assert run.runs(tag) == 1
    assert result.state == "PENDING"


def test_replace(run: Run) -> None:
    assert run.send("cp.replace", 1).get(timeout=20) == 101


# -- canvas


def test_chain(run: Run) -> None:
    from celery import chain

    workflow = chain(run.sig("cp.add", 1, 2), run.sig("cp.add", 3), run.sig("cp.mul", 2))
    assert workflow.apply_async().get(timeout=20) == 12


def test_group(run: Run) -> None:
    from celery import group

    result = group(run.sig("cp.add", i, i) for i in range(6)).apply_async()
    assert result.get(timeout=20) == [0, 2, 4, 6, 8, 10]


def test_chord_counts_in_the_redis_backend(run: Run) -> None:
    from celery import chord

    header = [run.sig("cp.add", i, i) for i in range(8)]
    assert chord(header)(run.sig("cp.tsum")).get(timeout=20) == 56


def test_chunks(run: Run) -> None:
    from celery.canvas import chunks

    result = chunks(run.sig("cp.add"), [(i, i) for i in range(7)], 3, app=run.client)
    assert result.apply_async().get(timeout=20) == [[0, 2, 4], [6, 8, 10], [12]]


def test_map_and_starmap(run: Run) -> None:
    from celery.canvas import xmap, xstarmap

    assert xmap(run.sig("cp.tsum"), [[1, 2], [3, 4]], app=run.client).apply_async().get(
        timeout=20
    ) == [3, 7]
    assert xstarmap(run.sig("cp.add"), [(1, 2), (3, 4)], app=run.client).apply_async().get(
        timeout=20
    ) == [3, 7]


def test_link_and_link_error(run: Run) -> None:
    tag_ok, tag_err = uuid.uuid4().hex, uuid.uuid4().hex
    ok = run.send("cp.add", 20, 1, link=run.sig("cp.record", tag_ok))
    failed = run.send("cp.fail", "linked", 2, link_error=run.sig("cp.errback", tag_err))
    assert ok.get(timeout=20) == 21
    with pytest.raises(Exception, match="linked"):
        failed.get(timeout=20)
    assert wait_for(lambda: len(run.hash("recorded")) == 2)
    assert run.hash("recorded") == {tag_ok: "21", tag_err: f"errback for {failed.id}"}


# -- ETA, countdown, expires


def test_eta_and_countdown_wait(run: Run) -> None:
    eta = datetime.now(timezone.utc) + timedelta(seconds=1.5)
    by_eta = run.send("cp.when", "eta", eta=eta)
    sent = time.time()
    by_countdown = run.send("cp.when", "countdown", countdown=1)
    assert run.send("cp.add", 1, 1).get(timeout=20) == 2  # not held up by the two above
    assert by_countdown.get(timeout=20) >= sent + 1 - 0.05
    assert by_eta.get(timeout=20) >= eta.timestamp() - 0.05


def test_expired_task_is_revoked(run: Run) -> None:
    result = run.send("cp.add", 1, 1, expires=datetime.now(timezone.utc) - timedelta(seconds=5))
    assert wait_for(lambda: result.state == "REVOKED")
    assert wait_for(lambda: run.hash("signals", result.id))
    assert run.hash("signals", result.id) == {"revoked:True": "1"}


# -- time limits


def needs_prefork(run: Run) -> None:
    if run.pool != "prefork":
        pytest.skip(
            f"time limits and lost children need the prefork pool (in Celery too), not {run.pool}"
        )


def test_soft_time_limit_is_raised_in_the_task(run: Run) -> None:
    needs_prefork(run)
    assert run.send("cp.soft_limit").get(timeout=20) == "soft limit caught"


def test_hard_time_limit_kills_the_task_not_the_worker(run: Run) -> None:
    needs_prefork(run)
    result = run.send("cp.hard_limit")
    with pytest.raises(Exception) as info:
        result.get(timeout=20)
    assert type(info.value).__name__ == "TimeLimitExceeded"
    # the result is stored before task_failure is sent; Celery's prefork pool may send it
    # twice for one hard limit (from its timeout handler and from the job's error callback)
    assert wait_for(
        lambda: int(run.hash("signals", result.id).get("failure:TimeLimitExceeded", 0)) >= 1
    )
    assert run.send("cp.add", 2, 2).get(timeout=20) == 4


def test_lost_child_is_a_failure(run: Run) -> None:
    needs_prefork(run)
    tag = uuid.uuid4().hex
    result = run.send("cp.die", tag)
    with pytest.raises(Exception) as info:
        result.get(timeout=20)
    assert type(info.value).__name__ == "WorkerLostError"
    assert run.runs(tag) == 1
    assert wait_for(lambda: run.hash("signals", result.id).get("failure:WorkerLostError") == "1")
    assert run.send("cp.add", 2, 3).get(timeout=20) == 5


def test_lost_child_with_reject_on_worker_lost_runs_again(run: Run) -> None:
    needs_prefork(run)
    tag = uuid.uuid4().hex
    assert run.send("cp.die_once", tag).get(timeout=20) == "survived"
    assert run.runs(tag) == 2


# -- results, hooks, signals, errors


def test_ignore_result(run: Run) -> None:
    tag = uuid.uuid4().hex
    result = run.send("cp.no_result", tag)
    assert wait_for(lambda: run.hash("signals", result.id).get("postrun:SUCCESS"))
    assert run.runs(tag) == 1
    assert result.state == "PENDING"


def test_custom_task_base_class_hooks(run: Run) -> None:
    ok = run.send("cp.audited_ok", 4)
    assert ok.get(timeout=20) == 8
    assert wait_for(lambda: len(run.hash("hooks", ok.id)) == 3)
    assert run.hash("hooks", ok.id) == {
        "before_start": "1",
        "on_success:8": "1",
        "after_return:SUCCESS": "1",
    }
    failed = run.send("cp.audited_fail")
    with pytest.raises(Exception, match="audited failure"):
        failed.get(timeout=20)
    assert wait_for(lambda: len(run.hash("hooks", failed.id)) == 3)
    assert run.hash("hooks", failed.id) == {
        "before_start": "1",
        "on_failure:ProjectError": "1",
        "after_return:FAILURE": "1",
    }
    retried = run.send("cp.audited_retry")
    assert retried.get(timeout=20) == "retried"
    assert wait_for(lambda: len(run.hash("hooks", retried.id)) == 4)
    assert run.hash("hooks", retried.id) == {
        "before_start": "2",
        "on_retry:ProjectError": "1",
        "on_success:retried": "1",
        "after_return:SUCCESS": "1",
    }


def test_task_signals(run: Run) -> None:
    ok = run.send("cp.add", 5, 5)
    assert ok.get(timeout=20) == 10
    failed = run.send("cp.fail", "boom", 42)
    with pytest.raises(Exception) as info:
        failed.get(timeout=20)
    assert type(info.value).__name__ == "ProjectError"
    assert info.value.args == ("boom", 42)
    assert wait_for(lambda: "postrun:SUCCESS" in run.hash("signals", ok.id))
    assert run.hash("signals", ok.id) == {
        "received:cp.add": "1",
        "prerun": "1",
        "success": "1",
        "postrun:SUCCESS": "1",
    }
    assert wait_for(lambda: "postrun:FAILURE" in run.hash("signals", failed.id))
    assert run.hash("signals", failed.id) == {
        "received:cp.fail": "1",
        "prerun": "1",
        "failure:ProjectError": "1",
        "postrun:FAILURE": "1",
    }


def test_unpicklable_exception(run: Run) -> None:
    result = run.send("cp.unpicklable")
    with pytest.raises(Exception) as info:
        result.get(timeout=20)
    assert type(info.value).__name__ == "UnpickleableExceptionWrapper"
    assert info.value.exc_cls_name == "Unpicklable"
    assert info.value.exc_args == ("cannot pickle me",)
    assert run.send("cp.add", 3, 3).get(timeout=20) == 6


def test_unregistered_task_fails_with_not_registered(run: Run) -> None:
    result = run.send("cp.not_a_task", 1)
    with pytest.raises(Exception) as info:
        result.get(timeout=20)
    assert type(info.value).__name__ == "NotRegistered"
    assert type(info.value).__module__ == "celery.exceptions"
    assert info.value.args == ("cp.not_a_task",)
    assert run.send("cp.add", 4, 4).get(timeout=20) == 8


def test_acks_late_runs_once(run: Run) -> None:
    tag = uuid.uuid4().hex
    assert run.send("cp.late", tag).get(timeout=20) == 1
    assert run.runs(tag) == 1


def test_worker_signals(run: Run) -> None:
    assert run.hash("worker_init") == {"n": "1"}
    assert run.hash("worker_ready")[run.kind] == str(run.proc.pid if run.proc else None)
    inits = run.hash("process_init")
    main_pid = str(run.proc.pid if run.proc else None)
    if run.pool == "prefork":
        assert inits, "worker_process_init was not sent"
        assert set(inits.values()) == {run.nodename}
        assert main_pid not in inits  # sent in the children
    elif run.pool == "solo":  # the worker's process is the pool's, as in Celery
        assert inits == {main_pid: run.nodename}
    else:
        assert inits == {}


def test_zz_warm_shutdown_and_logs(run: Run) -> None:
    tag = uuid.uuid4().hex
    logged = run.send("cp.log_line", tag)
    assert logged.get(timeout=20) is None
    assert run.stop() == 0, run.output
    lines = run.output.splitlines()
    # Celery's task log format names the task; print() goes to the log (worker_redirect_stdouts)
    assert any(f"cp.log_line[{logged.id}]: logged {tag}" in line for line in lines), run.output
    assert any("WARNING" in line and f"printed {tag}" in line for line in lines), run.output
    assert run.hash("worker_shutdown") == {"n": "1"}
    if run.pool == "prefork":
        assert set(run.hash("process_shutdown").values()) == {run.nodename}
