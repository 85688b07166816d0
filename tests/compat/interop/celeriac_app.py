"""The celeriac side: ``celeriac worker -A tests.compat.interop.celeriac_app``."""

from __future__ import annotations

from celeriac import Celery
from tests.compat.interop.tasks import BACKEND, BROKER, register

app = Celery("interop", broker=BROKER, backend=BACKEND)
tasks = register(app)
