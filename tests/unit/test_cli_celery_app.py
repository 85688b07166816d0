"""``celeriac worker -A proj`` with a ``celery.Celery`` app: finding it, its settings and
queues, and the Celery flags that are refused by name (no broker needed)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from celeriac.cli.loader import find_app
from celeriac.cli.main import main
from celeriac.cli.worker_options import pid_file
from celeriac.compat.celery import CeleryHost, translate_settings

PROJECT = "tests.compat.celery_project"


@pytest.fixture(autouse=True)
def ledger_prefix(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The project's signal receivers write to Redis: under a prefix of this test's own."""
    import uuid

    from tests.compat.celery_project import ledger

    prefix = f"celeriac.test.cli.{uuid.uuid4().hex[:10]}"
    monkeypatch.setattr(ledger, "PREFIX", prefix)
    yield
    try:
        client = ledger.client()
        for key in client.scan_iter(f"{prefix}:*"):
            client.delete(key)
    except Exception:  # no Redis: the receivers could not write either
        pass


@pytest.mark.parametrize(
    "spec",
    [PROJECT, f"{PROJECT}.celery", f"{PROJECT}.celery:app", f"{PROJECT}:celery_app"],
)
def test_find_app_wraps_the_celery_app(spec: str) -> None:
    from tests.compat.celery_project.celery import app

    host = find_app(spec)
    assert isinstance(host, CeleryHost)
    assert host.celery_app is app


def test_settings_and_queues_come_from_the_celery_app() -> None:
    from tests.compat.celery_project.celery import QUEUE, app

    settings = translate_settings(app.conf)
    assert settings["broker_url"] == app.conf.broker_url
    assert settings["task_default_queue"] == QUEUE
    assert settings["worker_prefetch_multiplier"] == 2
    host = find_app(PROJECT)
    assert host.conf.broker_url == app.conf.broker_url
    assert host.worker_queues() == [QUEUE, f"{QUEUE}.routed", f"{QUEUE}.excluded"]
    assert host.worker_queues(exclude=[f"{QUEUE}.excluded"]) == [QUEUE, f"{QUEUE}.routed"]
    assert host.worker_queues(["other"], exclude=[QUEUE]) == ["other"]


def test_command_line_broker_and_backend_reach_the_celery_app() -> None:
    host = find_app(PROJECT)
    old = dict(host.celery_app.conf.broker_url and {"b": host.celery_app.conf.broker_url})
    try:
        host.override("pyamqp://guest:guest@127.0.0.1:5672/vh", "redis://127.0.0.1:6379/9")
        assert host.celery_app.conf.broker_url == "pyamqp://guest:guest@127.0.0.1:5672/vh"
        assert host.celery_app.conf.result_backend == "redis://127.0.0.1:6379/9"
        assert host.conf.broker_url == "pyamqp://guest:guest@127.0.0.1:5672/vh"
    finally:
        host.celery_app.conf.broker_url = old.get("b")


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["-B"], "-B/--beat"),
        (["--beat"], "-B/--beat"),
        (["-D"], "-D/--detach"),
        (["--statedb", "/tmp/x"], "-S/--statedb"),
        (["--scheduler", "x"], "--scheduler"),
        (["--uid", "1000"], "--uid"),
        (["--gid", "1000"], "--gid"),
        (["--umask", "022"], "--umask"),
        (["-P", "gevent"], "'gevent'"),
        (["-P", "eventlet"], "'eventlet'"),
    ],
)
def test_unsupported_flags_fail_naming_the_flag(flags: list[str], named: str) -> None:
    result = CliRunner().invoke(main, ["-A", PROJECT, "worker", *flags, "--print-steps"])
    assert result.exit_code == 2, result.output
    assert named in result.output
    assert "not supported" in result.output


def test_celery_flags_that_mean_nothing_here_are_accepted() -> None:
    result = CliRunner().invoke(
        main,
        [
            "worker",
            "-A",
            PROJECT,
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-P",
            "processes",
            "-O",
            "fair",
            "-X",
            "nothing",
            "--print-steps",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Consumer" in result.output


def test_excluding_every_queue_is_an_error() -> None:
    from tests.compat.celery_project.celery import QUEUE

    every = f"{QUEUE},{QUEUE}.routed,{QUEUE}.excluded"
    result = CliRunner().invoke(main, ["worker", "-A", PROJECT, "-X", every, "--print-steps"])
    assert result.exit_code == 2
    assert "every queue is excluded" in result.output


def test_celery_bootsteps_are_refused_by_name() -> None:
    from celery import bootsteps

    from tests.compat.celery_project.celery import app

    class Audit(bootsteps.StartStopStep):  # type: ignore[misc]
        pass

    app.steps["worker"].add(Audit)
    try:
        result = CliRunner().invoke(main, ["worker", "-A", PROJECT, "--print-steps"])
    finally:
        app.steps["worker"].discard(Audit)
    assert result.exit_code == 1
    assert "celery bootsteps in app.steps are not supported" in result.output
    assert "Audit" in result.output


def test_a_broker_without_a_celeriac_transport_fails_before_start() -> None:
    result = CliRunner().invoke(
        main, ["-A", PROJECT, "-b", "sqs://localhost", "worker", "--print-steps"]
    )
    assert result.exit_code == 1
    assert "unknown broker url scheme 'sqs'" in result.output
    assert "ready" not in result.output


def test_pid_file_is_written_and_removed(tmp_path: Path) -> None:
    path = tmp_path / "worker.pid"
    with pid_file(str(path)):
        assert path.read_text().strip() == str(os.getpid())
    assert not path.exists()


def test_pid_file_of_a_running_process_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "worker.pid"
    path.write_text(f"{os.getppid()}\n")
    with pytest.raises(click.ClickException, match="names running process"), pid_file(str(path)):
        pass
    path.write_text("999999999\n")  # stale: replaced
    with pid_file(str(path)):
        assert path.read_text().strip() == str(os.getpid())


def test_task_events_are_refused_for_a_celeriac_app(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).parent / "cliproj"))
    result = CliRunner().invoke(main, ["worker", "-A", "proj", "-E", "--print-steps"])
    assert result.exit_code == 2
    assert "-E/--task-events is not supported" in result.output
    result = CliRunner().invoke(
        main, ["worker", "-A", "proj", "--heartbeat-interval", "5", "--print-steps"]
    )
    assert result.exit_code == 2
    assert "--heartbeat-interval is not supported" in result.output
