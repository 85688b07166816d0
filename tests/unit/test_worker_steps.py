"""User bootsteps inside the real worker, and the printed step graph."""

from __future__ import annotations

from typing import Any

from celeriac import Celery, bootsteps
from celeriac.testing import start_worker
from celeriac.worker import steps as worker_steps
from celeriac.worker.consumer.tasks import Tasks


def test_user_worker_and_consumer_steps_start_and_stop_in_order(app: Celery) -> None:
    log: list[str] = []

    class Audit(bootsteps.StartStopStep):
        requires = (worker_steps.Pool,)

        def __init__(self, parent: Any, **kwargs: Any) -> None:
            super().__init__(parent, **kwargs)
            log.append(f"init:{type(parent).__name__}")

        def start(self, parent: Any) -> None:
            # the pool it requires exists and was started before us
            log.append(f"start:pool={type(parent.pool).__name__}")

        def stop(self, parent: Any) -> None:
            log.append("stop")

    class AfterTasks(bootsteps.StartStopStep):
        requires = (Tasks,)

        def start(self, parent: Any) -> None:
            log.append(f"consumer-start:connected={parent.transport.connected}")

        def stop(self, parent: Any) -> None:
            # stopped before the connection it depends on is closed
            log.append(f"consumer-stop:connected={parent.transport.connected}")

    app.steps["worker"].add(Audit)
    app.steps["consumer"].add(AfterTasks)

    @app.task
    def ping() -> str:
        return "pong"

    with start_worker(app) as worker:
        assert ping.delay().get(timeout=5) == "pong"
        order = [type(s).__name__ for s in worker.blueprint.order]
        assert order.index("Audit") > order.index("Pool")
        assert order[-1] == "Consumer"
    assert log == [
        "init:WorkController",
        "start:pool=SoloPool",
        "consumer-start:connected=True",
        "consumer-stop:connected=True",
        "stop",
    ]


def test_graph_text_lists_every_step(app: Celery) -> None:
    worker = app.Worker(pool="solo")
    text = worker.blueprint.graph_text()
    for name in ("Timer", "Pool", "Consumer"):
        assert name in text
    assert "Connection" in worker.consumer.blueprint.graph_text()
