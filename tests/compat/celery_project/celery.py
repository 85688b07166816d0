"""The project's Celery app; its broker, backend and queue names come from the environment
so each test run uses names of its own."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from kombu import Exchange, Queue

PREFIX = os.environ.get("CP_PREFIX", "cp")
QUEUE = os.environ.get("CP_QUEUE", "cp.default")


def configure(
    app: Any, queue: str = QUEUE, broker: str | None = None, backend: str | None = None
) -> None:
    """The settings the worker and the test's client share."""
    app.conf.update(
        broker_url=broker or os.environ.get("CP_BROKER", "pyamqp://guest:guest@127.0.0.1:5672//"),
        result_backend=backend or os.environ.get("CP_BACKEND", "redis://127.0.0.1:6379/15"),
        result_expires=300,
        task_default_queue=queue,
        task_queues=[
            Queue(queue, Exchange(queue), routing_key=queue),
            Queue(f"{queue}.routed", Exchange(f"{queue}.topic", type="topic"), routing_key="cp.#"),
            Queue(f"{queue}.excluded", Exchange(f"{queue}.excluded"), routing_key="excluded"),
        ],
        task_routes={
            "cp.routed": {"queue": f"{queue}.routed", "routing_key": "cp.routed.key"},
            "cp.excluded": {"queue": f"{queue}.excluded", "routing_key": "excluded"},
        },
        worker_prefetch_multiplier=2,
        include=["tests.compat.celery_project.handlers"],
    )


app = Celery("celery_project")
configure(app)
app.autodiscover_tasks(["tests.compat.celery_project"])
