"""celeriac: a Celery-compatible task-queue worker runtime with a compiled hot path."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
