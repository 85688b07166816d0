"""``celeriac bench`` options: task kinds, sweep axes, the worker's flags and environment."""

from __future__ import annotations

import pytest

from celeriac.bench import apps
from celeriac.bench.config import BenchOptions, TaskKind, parse_sweep, parse_task, sweep_grid
from celeriac.bench.run import worker_env


@pytest.mark.parametrize(
    ("text", "kind", "call"),
    [
        ("noop", TaskKind("noop"), (apps.NOOP, ())),
        ("echo", TaskKind("echo"), (apps.ECHO, ())),
        ("sleep:5", TaskKind("sleep", 5), (apps.SLEEP, (5.0,))),
        ("cpu:250", TaskKind("cpu", 250), (apps.CPU, (250.0,))),
    ],
)
def test_task_kinds_parse_and_name_their_task(
    text: str, kind: TaskKind, call: tuple[str, tuple[object, ...]]
) -> None:
    parsed = parse_task(text)
    assert parsed == kind
    assert str(parsed) == text
    assert parsed.call(None) == call
    name, args = parsed.call("xx")
    assert name == call[0] and args[-1] == "xx"


@pytest.mark.parametrize("text", ["", "nop", "sleep", "sleep:", "sleep:-1", "cpu:fast", "echo:3"])
def test_bad_task_kinds_are_refused_by_value(text: str) -> None:
    with pytest.raises(ValueError, match=repr(text).replace("(", r"\(")):
        parse_task(text)


def test_the_task_functions_do_what_their_kind_says() -> None:
    assert apps.echo("abc") == "abc"
    assert apps.noop("payload") is None
    assert apps.cpu(200) > 0


def test_sweep_axes_parse_into_option_names() -> None:
    axes = parse_sweep(["prefetch=1,4,16", "pool=solo,threads", "concurrency=1,2"])
    assert axes == {
        "prefetch_multiplier": [1, 4, 16],
        "pool": ["solo", "threads"],
        "concurrency": [1, 2],
    }


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("speed=1,2", "sweep axis must be one of"),
        ("pool=solo,gevent", "'gevent'"),
        ("prefetch=a,b", "integers"),
        ("concurrency=0", "positive"),
        ("prefetch=", "no values"),
    ],
)
def test_bad_sweep_axes_name_the_bad_value(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_sweep([spec])


def test_sweep_axis_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="twice"):
        parse_sweep(["pool=solo", "pool=threads"])


def test_sweep_grid_runs_solo_once_per_prefetch() -> None:
    base = BenchOptions(broker="amqp://localhost//")
    grid = sweep_grid(
        base,
        {"prefetch_multiplier": [1, 16], "pool": ["solo", "threads"], "concurrency": [1, 2, 4]},
    )
    labels = [o.label() for o in grid]
    assert len(labels) == len(set(labels)) == 2 * (1 + 3)
    assert "solo -c 1 x16" in labels and "threads -c 4 x1" in labels
    assert all(o.queue == base.queue for o in grid)


def test_worker_flags_carry_every_worker_option() -> None:
    opts = BenchOptions(
        pool="prefork",
        concurrency=3,
        prefetch_multiplier=16,
        fair=True,
        max_tasks_per_child=50,
    )
    assert opts.worker_flags() == [
        "-P",
        "prefork",
        "-c",
        "3",
        "--prefetch-multiplier",
        "16",
        "-O",
        "fair",
        "--max-tasks-per-child",
        "50",
    ]
    assert BenchOptions(pool="solo", concurrency=8).worker_flags()[:4] == ["-P", "solo", "-c", "1"]


def test_worker_env_sets_the_bench_app_and_drops_url_overrides(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CELERIAC_BROKER_URL", "amqp://elsewhere//")
    monkeypatch.setenv("CELERY_RESULT_BACKEND", "redis://elsewhere/0")
    opts = BenchOptions(broker="amqp://guest:guest@localhost//", acks_late=True, queue="q1")
    env = worker_env(opts)
    assert env["CELERIAC_BENCH_BROKER"] == "amqp://guest:guest@localhost//"
    assert env["CELERIAC_BENCH_BACKEND"] == "rpc://"
    assert env["CELERIAC_BENCH_QUEUE"] == "q1"
    assert env["CELERIAC_BENCH_ACKS_LATE"] == "1"
    assert "CELERIAC_BROKER_URL" not in env and "CELERY_RESULT_BACKEND" not in env


def test_bench_app_takes_acks_late_and_queue() -> None:
    app = apps.make_celeriac_app("memory://", None, "q2", acks_late=True)
    assert app.conf.task_acks_late is True
    assert app.conf.task_default_queue == "q2"
    assert {apps.NOOP, apps.ECHO, apps.SLEEP, apps.CPU, apps.MARK} <= set(app.tasks)


def test_config_masks_passwords_and_names_the_backend() -> None:
    data = BenchOptions(broker="amqp://u:secret@h//", result_backend="redis://:pw@h/0").as_dict()
    assert "secret" not in str(data) and "pw@" not in str(data)
    assert BenchOptions(broker="memory://", queue="q").as_dict()["result_backend"] == "memory://q"
