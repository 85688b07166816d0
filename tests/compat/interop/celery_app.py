"""The Celery side: ``celery -A tests.compat.interop.celery_app worker``."""

from __future__ import annotations

from celery import Celery

from tests.compat.interop.tasks import BACKEND, BROKER, register

app = Celery("interop", broker=BROKER, backend=BACKEND)
app.conf.broker_connection_retry_on_startup = True
tasks = register(app)
