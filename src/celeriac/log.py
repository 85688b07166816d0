"""Logging set-up for the command line (the library itself only logs, never configures)."""

from __future__ import annotations

import logging
import sys

__all__ = ["LEVELS", "setup_logging"]

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
