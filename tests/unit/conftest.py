"""Unit-test fixtures: an app on a private embedded broker and result store."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from celeriac import Celery


@pytest.fixture
def app() -> Iterator[Celery]:
    """A fresh app whose broker and backend no other test sees."""
    name = uuid.uuid4().hex[:12]
    application = Celery(f"t{name}", broker=f"memory://{name}", backend=f"memory://{name}")
    yield application
    application.close()
