"""The Celery-shaped app: settings, task registration, eager calls, routing, results."""

from __future__ import annotations

from typing import Any

import pytest

from celeriac import Celery, Task, shared_task, states
from celeriac.errors import ConfigurationError, NotRegistered, Retry


def test_conf_defaults_match_celery() -> None:
    app = Celery("x", set_as_current=False)
    conf = app.conf
    assert conf.task_serializer == "json"
    assert conf.accept_content == ["json"]
    assert conf.task_default_queue == "celery"
    assert conf.worker_prefetch_multiplier == 4
    assert conf.task_acks_late is False
    assert conf.result_expires == 86400
    assert conf.enable_utc is True
    assert conf["task_always_eager"] is False


def test_conf_update_and_config_from_object() -> None:
    class Config:
        broker_url = "memory://cfg"
        task_acks_late = True
        _private = "ignored"

    app = Celery("x", set_as_current=False)
    app.config_from_object(Config)
    assert app.conf.broker_url == "memory://cfg"
    assert app.conf.task_acks_late is True
    app.conf.update(worker_prefetch_multiplier=16)
    assert app.conf.worker_prefetch_multiplier == 16
    app.config_from_object({"CELERY_TASK_SERIALIZER": "yaml", "OTHER": 1}, namespace="CELERY")
    assert app.conf.task_serializer == "yaml"
    with pytest.raises(ConfigurationError, match="cannot load configuration"):
        app.config_from_object("no_such_module_anywhere")


def test_env_overrides_broker_and_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    app = Celery("x", broker="memory://conf", backend="memory://conf", set_as_current=False)
    monkeypatch.setenv("CELERY_BROKER_URL", "memory://celery-env")
    assert app.conf.broker_url == "memory://celery-env"
    monkeypatch.setenv("CELERIAC_BROKER_URL", "memory://celeriac-env")
    assert app.conf.broker_url == "memory://celeriac-env"
    monkeypatch.setenv("CELERY_RESULT_BACKEND", "memory://rb")
    assert app.conf.result_backend == "memory://rb"


def test_task_decorator_options_and_names(app: Celery) -> None:
    @app.task(
        name="custom.name",
        max_retries=7,
        acks_late=True,
        queue="q1",
        rate_limit="10/s",
        track_started=True,
        time_limit=5,
        soft_time_limit=3,
    )
    def fn(x: int) -> int:
        return x

    assert app.tasks["custom.name"] is fn
    assert fn.max_retries == 7
    assert fn.acks_late is True
    assert fn.queue == "q1"
    assert fn.time_limit == 5 and fn.soft_time_limit == 3

    @app.task
    def plain() -> None:
        pass

    assert plain.name == f"{__name__}.{plain.run.__qualname__}".replace(
        plain.run.__qualname__, "test_task_decorator_options_and_names.<locals>.plain"
    )
    assert fn(3) == 3  # calling the task object calls the function
    with pytest.raises(NotRegistered):
        app.tasks["missing"]


def test_custom_base_class_hooks(app: Celery) -> None:
    events: list[str] = []

    class Base(Task):
        def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
            events.append("before")

        def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
            events.append(f"success:{retval}")

        def on_failure(
            self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
        ) -> None:
            events.append(f"failure:{type(exc).__name__}")

        def after_return(self, status: str, *args: Any) -> None:
            events.append(f"after:{status}")

    @app.task(base=Base)
    def ok() -> int:
        return 1

    @app.task(base=Base)
    def bad() -> None:
        raise OSError("x")

    assert ok.apply().get() == 1
    assert bad.apply().state == states.FAILURE
    assert events == [
        "before",
        "success:1",
        "after:SUCCESS",
        "before",
        "failure:OSError",
        "after:FAILURE",
    ]


def test_typing_checks_arguments_at_call(app: Celery) -> None:
    @app.task
    def two(a: int, b: int) -> int:
        return a + b

    with pytest.raises(TypeError, match="missing"):
        two.delay(1)

    @app.task(typing=False)
    def loose(a: int) -> int:
        return a

    app.conf.task_always_eager = True
    assert loose.delay(1).get() == 1


def test_eager_mode_and_apply(app: Celery) -> None:
    app.conf.task_always_eager = True

    @app.task(bind=True, max_retries=2, default_retry_delay=0)
    def flaky(self: Any) -> int:
        if self.request.retries < 2:
            raise self.retry()
        return int(self.request.retries)

    @app.task
    def fails() -> None:
        raise ValueError("no")

    result = flaky.delay()
    assert result.get() == 2
    assert flaky.apply().state == states.SUCCESS
    assert fails.apply().state == states.FAILURE
    with pytest.raises(ValueError):
        fails.apply().get()
    app.conf.task_eager_propagates = True
    with pytest.raises(ValueError):
        fails.delay()


def test_retry_called_directly_raises(app: Celery) -> None:
    @app.task(bind=True)
    def direct(self: Any) -> None:
        raise self.retry(exc=KeyError("k"))

    with pytest.raises(KeyError):
        direct()

    @app.task(bind=True)
    def direct_no_exc(self: Any) -> None:
        raise self.retry()

    with pytest.raises(Retry):
        direct_no_exc()


def test_shared_task_registers_with_every_app() -> None:
    @shared_task(name="tests.shared.double")
    def double(x: int) -> int:
        return 2 * x

    later = Celery("later", set_as_current=False)
    assert "tests.shared.double" in later.tasks
    assert later.tasks["tests.shared.double"].run(4) == 8


def test_task_routes(app: Celery) -> None:
    app.conf.task_routes = {"proj.a.*": {"queue": "alpha"}, "proj.b": "beta"}
    assert app.route_for("proj.a.x") == {"queue": "alpha"}
    assert app.route_for("proj.b") == {"queue": "beta"}
    assert app.route_for("proj.c") == {}
    app.conf.task_routes = [lambda name, *a: {"queue": "fn"} if name == "z" else None]
    assert app.route_for("z") == {"queue": "fn"}


def test_publish_declares_and_routes_to_the_queue(app: Celery) -> None:
    app.conf.task_routes = {"routed.task": {"queue": "other"}}
    app.send_task("routed.task", (1,))
    transport = app.producer_transport()
    delivery = transport.get("other", no_ack=True)
    assert delivery is not None
    assert delivery.headers is not None and delivery.headers["task"] == "routed.task"
    assert delivery.properties["reply_to"] == app.oid
    assert delivery.properties["correlation_id"] == delivery.headers["id"]


def test_send_task_rejects_bad_args(app: Celery) -> None:
    with pytest.raises(TypeError, match="list or tuple"):
        app.send_task("x", args="notalist")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="mapping"):
        app.send_task("x", (), kwargs=[1])  # type: ignore[arg-type]


def test_result_without_backend_says_how_to_fix() -> None:
    app = Celery("nb", broker="memory://nb", set_as_current=False)
    with pytest.raises(ConfigurationError, match="no result backend"):
        _ = app.AsyncResult("abc").state
