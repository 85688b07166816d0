"""A worker app for the fault tests: each task records its id in a Redis set."""

from __future__ import annotations

import json
import os

import redis

from celeriac import Celery

QUEUE = os.environ.get("FAULTS_QUEUE", "celeriac.test.faults")
KEY = os.environ.get("FAULTS_KEY", "celeriac.test.faults")
REDIS_URL = "redis://127.0.0.1:6379/15"

app = Celery(
    "faults", broker=os.environ.get("FAULTS_BROKER", "amqp://guest:guest@127.0.0.1:5672//")
)
app.conf.task_default_queue = QUEUE
app.conf.broker_transport_options = json.loads(os.environ.get("FAULTS_TRANSPORT_OPTIONS", "{}"))
_redis = redis.Redis.from_url(REDIS_URL)


@app.task(name="faults.record", ignore_result=True)
def record(i: int) -> None:
    _redis.sadd(KEY, i)


@app.task(name="faults.count", ignore_result=True)
def count(i: int, pause: float = 0.0) -> None:
    """Counts every run of task ``i``: a value above 1 is a task that ran twice."""
    if pause:
        import time

        time.sleep(pause)
    _redis.hincrby(KEY, str(i), 1)


@app.task(name="faults.count_late", ignore_result=True, acks_late=True)
def count_late(i: int, pause: float = 0.0) -> None:
    count(i, pause)
