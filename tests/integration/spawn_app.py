"""An app that spawned prefork children import again (``-P prefork`` with ``spawn``)."""

from __future__ import annotations

import os
import sys

from celeriac import Celery

app = Celery(
    "spawn_app",
    broker=os.environ.get("SPAWN_BROKER", "amqp://guest:guest@127.0.0.1:5672//"),
    backend="redis://127.0.0.1:6379/15",
)


@app.task(name="spawn.whoami")
def whoami() -> list[object]:
    """This process's pid and whether the test runner was imported here (forked: yes)."""
    return [os.getpid(), "pytest" in sys.modules]
