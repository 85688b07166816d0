"""A Redis ledger outside the workers: what ran, how often, and which signals fired."""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

import redis

from .celery import PREFIX

LEDGER_URL = os.environ.get("CP_LEDGER", "redis://127.0.0.1:6379/15")


@lru_cache(maxsize=1)
def _client(pid: int) -> Any:
    return redis.Redis.from_url(LEDGER_URL)


def client() -> Any:
    """A connection of this process's own (a forked child does not reuse its parent's)."""
    return _client(os.getpid())


def key(*parts: object) -> str:
    return ":".join([PREFIX, *(str(p) for p in parts)])


def count(*parts: object, field: str = "n") -> int:
    return int(client().hincrby(key(*parts), field, 1))


def record(name: str, field: str, value: object) -> None:
    client().hset(key(name), field, str(value))
