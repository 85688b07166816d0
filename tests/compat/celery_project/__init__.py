"""A Celery project as users write one: the app in ``celery.py``, tasks in ``tasks.py``."""

from .celery import app as celery_app

__all__ = ["celery_app"]
