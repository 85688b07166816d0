"""Logging set-up for the command line (the library itself only logs, never configures)."""

from __future__ import annotations

import logging
import sys
from typing import Any

__all__ = ["LEVELS", "redirect_celery_stdouts", "setup_celery_logging", "setup_logging"]

LEVELS = {
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARNING": logging.WARNING,
    "WARN": logging.WARNING,
    "ERROR": logging.ERROR,
    "CRITICAL": logging.CRITICAL,
    "FATAL": logging.CRITICAL,
}

FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(name)s: %(message)s"


def setup_logging(level: str = "WARNING", logfile: str | None = None) -> None:
    """Send celeriac's (and the tasks') logs to stderr or ``logfile`` at ``level``."""
    numeric = LEVELS.get(level.upper())
    if numeric is None:
        raise ValueError(f"unknown log level {level!r}; use one of {', '.join(LEVELS)}")
    handler: logging.Handler = (
        logging.FileHandler(logfile) if logfile else logging.StreamHandler(sys.stderr)
    )
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)


def setup_celery_logging(celery_app: Any, level: str, logfile: str | None, nodename: str) -> None:
    """Configure logging as ``celery worker`` does for a Celery app: Celery's formats (task
    logs carry the task's name and id), its ``setup_logging`` signal (a project that handles
    it configures logging itself), ``after_setup_logger`` and ``worker_hijack_root_logger``.
    """
    # undo setup_logging: Celery configures the root logger from scratch
    logging.getLogger().handlers[:] = []
    celery_app.log.setup(LEVELS[level.upper()], logfile, redirect_stdouts=False, hostname=nodename)


def redirect_celery_stdouts(celery_app: Any) -> None:
    """``worker_redirect_stdouts``: what tasks print goes to the log, as in ``celery worker``
    (not when the project configured logging through the ``setup_logging`` signal)."""
    from celery import signals

    conf = celery_app.conf
    if conf.worker_redirect_stdouts and not signals.setup_logging.receivers:
        celery_app.log.redirect_stdouts(conf.worker_redirect_stdouts_level)
