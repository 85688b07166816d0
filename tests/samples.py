"""Messages as Celery 5.7 puts them on the wire, shared by the tests and the benchmarks."""

from __future__ import annotations

from typing import Any


def celery_headers(task_id: str, argsrepr: str = "()", **overrides: Any) -> dict[str, Any]:
    """The v2 headers Celery 5.7 sends for ``proj.tasks.add.delay()`` (wire notes §1.3)."""
    headers: dict[str, Any] = {
        "lang": "py",
        "task": "proj.tasks.add",
        "id": task_id,
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": task_id,
        "parent_id": None,
        "argsrepr": argsrepr,
        "kwargsrepr": "{}",
        "origin": "gen15995@vm",
        "ignore_result": False,
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
    }
    headers.update(overrides)
    return headers
