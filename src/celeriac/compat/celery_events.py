"""Celery's monitoring events from a worker running a Celery app: task events (``-E``) and
worker heartbeats (``worker-online``/``-heartbeat``/``-offline``), sent with the app's own
event dispatcher so Flower and ``celery events`` read them as they read Celery's."""

from __future__ import annotations

import logging
import os
import platform
import threading
from typing import TYPE_CHECKING, Any

from celeriac import __version__

if TYPE_CHECKING:
    from celeriac.worker.state import WorkerState

__all__ = ["HEARTBEAT_INTERVAL", "WorkerEvents"]

logger = logging.getLogger("celeriac.compat")

HEARTBEAT_INTERVAL = 2.0
"""Seconds between ``worker-heartbeat`` events (Celery's default)."""

SOFTWARE_INFO = {"sw_ident": "celeriac", "sw_ver": __version__, "sw_sys": platform.system()}


class WorkerEvents:
    """The event dispatchers of one worker: one per process (a prefork child opens its own
    connection on its first event), task events only with ``task_events``."""

    def __init__(
        self,
        celery_app: Any,
        hostname: str,
        task_events: bool,
        heartbeat: bool,
        interval: float = HEARTBEAT_INTERVAL,
    ) -> None:
        self.celery_app = celery_app
        self.hostname = hostname
        self.task_events = task_events
        self.heartbeat = heartbeat
        self.interval = interval
        self._dispatcher: tuple[int, Any] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._state: WorkerState | None = None

    def dispatcher(self) -> Any:
        """This process's dispatcher, made on first use."""
        made = self._dispatcher
        pid = os.getpid()
        if made is None or made[0] != pid:
            with self._lock:
                made = self._dispatcher
                if made is None or made[0] != pid:
                    capp = self.celery_app
                    dispatcher = capp.events.Dispatcher(
                        capp.connection_for_write(),
                        hostname=self.hostname,
                        enabled=True,
                        groups=None if self.task_events else ["worker"],
                    )
                    made = self._dispatcher = (pid, dispatcher)
        return made[1]

    def task(self, task: Any, type: str, **fields: Any) -> None:
        """Send task event ``type`` (``task-started``...) when task events are on and the
        task sends events (``Task.send_events``)."""
        if not self.task_events or not getattr(task, "send_events", True):
            return
        try:
            self.dispatcher().send(type, **fields)
        except Exception as exc:  # monitoring must not fail a task
            logger.warning("cannot send %s event: %r", type, exc)

    # -- heartbeats, in the worker's own process
    def start(self, state: WorkerState) -> None:
        """``worker-online``, then a ``worker-heartbeat`` every :attr:`interval` seconds."""
        if not self.heartbeat or self._thread is not None:
            return
        self._state = state
        self._stop.clear()
        self._send_worker("worker-online")
        thread = threading.Thread(target=self._beat, name="celeriac-events-heartbeat", daemon=True)
        self._thread = thread
        thread.start()

    def stop(self) -> None:
        """``worker-offline`` and close this process's connection."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join(timeout=self.interval + 1)
            self._send_worker("worker-offline")
        made, self._dispatcher = self._dispatcher, None
        if made is not None and made[0] == os.getpid():
            try:
                made[1].close()
                made[1].connection.release()
            except Exception as exc:
                logger.debug("closing the event connection failed: %r", exc)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            self._send_worker("worker-heartbeat")

    def _send_worker(self, type: str) -> None:
        from celery.utils.sysinfo import load_average

        state = self._state
        try:
            self.dispatcher().send(
                type,
                freq=self.interval,
                active=len(state.active) if state is not None else 0,
                processed=state.processed if state is not None else 0,
                loadavg=load_average(),
                **SOFTWARE_INFO,
            )
        except Exception as exc:
            logger.warning("cannot send %s event: %r", type, exc)
