"""Result meta in Celery's format, exception encoding, and the security rule on reading."""

from __future__ import annotations

import pytest

from celeriac import Celery, states
from celeriac.backends.exceptions import exception_from_dict, exception_to_dict
from celeriac.errors import NotRegistered, SecurityError, TimeLimitExceeded, TimeoutError


def test_meta_keys_in_celery_order(app: Celery) -> None:
    meta = app.backend.store_result("tid", 5, states.SUCCESS)
    assert list(meta) == ["status", "result", "traceback", "children", "date_done", "task_id"]
    assert meta["date_done"].endswith("+00:00")
    stored = app.backend.get_task_meta("tid")
    assert stored == meta


def test_success_is_never_overwritten(app: Celery) -> None:
    app.backend.mark_as_done("t1", 1)
    app.backend.mark_as_failure("t1", ValueError("late duplicate"))
    assert app.AsyncResult("t1").get(timeout=1) == 1


def test_exception_encoding_matches_celery() -> None:
    def always(_: object) -> bool:
        return True

    assert exception_to_dict(ValueError("boom", 42), always) == {
        "exc_type": "ValueError",
        "exc_message": ["boom", 42],
        "exc_module": "builtins",
    }
    # our task errors travel under Celery's/billiard's module names
    assert exception_to_dict(NotRegistered("x"), always)["exc_module"] == "celery.exceptions"
    assert exception_to_dict(TimeLimitExceeded(1.0), always)["exc_module"] == (
        "billiard.exceptions"
    )
    # unserializable arguments become their repr
    obj = object()
    encoded = exception_to_dict(ValueError(obj), lambda v: v is not obj)
    assert encoded["exc_message"] == [repr(obj)]


def test_exception_decoding_and_security() -> None:
    exc = exception_from_dict(
        {"exc_type": "NotRegistered", "exc_message": ["x"], "exc_module": "celery.exceptions"}
    )
    assert isinstance(exc, NotRegistered)
    unknown = exception_from_dict(
        {"exc_type": "Gone", "exc_message": ["m"], "exc_module": "no.such.module"}
    )
    assert type(unknown).__name__ == "Gone" and unknown.args == ("m",)
    # CVE-2021-23727: a result naming a callable that is not an exception is refused
    with pytest.raises(SecurityError):
        exception_from_dict(
            {"exc_type": "system", "exc_message": ["echo pwned"], "exc_module": "os"}
        )
    old_style = exception_from_dict(
        {"exc_type": "KeyError", "exc_message": "plain", "exc_module": "builtins"}
    )
    assert isinstance(old_style, KeyError) and old_style.args == ("plain",)


def test_get_times_out(app: Celery) -> None:
    with pytest.raises(TimeoutError, match="timed out"):
        app.AsyncResult("never").get(timeout=0.05)


def test_forget_and_states(app: Celery) -> None:
    app.backend.mark_as_started("s", pid=1, hostname="h")
    r = app.AsyncResult("s")
    assert r.state == states.STARTED and not r.ready()
    app.backend.mark_as_done("s", {"a": 1})
    assert r.ready() and r.successful() and r.result == {"a": 1}
    r.forget()
    assert app.AsyncResult("s").state == states.PENDING


def test_revoked_meta_has_null_children_like_celery(app: Celery) -> None:
    meta = app.backend.mark_as_revoked("r1", "expired")
    assert meta["children"] is None
    assert meta["result"] == {
        "exc_type": "TaskRevokedError",
        "exc_message": ["expired"],
        "exc_module": "celery.exceptions",
    }
