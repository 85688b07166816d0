"""What the worker does with each delivery: decode, look up the task, then run, hold or drop it.

Bad input follows the wire contract (§2.7): an undecodable body is logged and acked, a
disallowed content type or invalid task is logged and rejected without requeue, an unknown task
name is rejected and its FAILURE (``NotRegistered``) stored, a message that is not a task at all
is rejected. The worker keeps consuming in every case.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from celeriac import signals
from celeriac.errors import (
    ContentDisallowed,
    DecodeError,
    InvalidTaskError,
    MessageTooLarge,
    NotRegistered,
    UnknownMessageError,
)
from celeriac.worker.executor import discard_if_revoked
from celeriac.worker.ratelimit import RateLimiter
from celeriac.worker.request import Request

if TYPE_CHECKING:
    from celeriac._speedups_py.message import MessageDecoder
    from celeriac.app import Celery
    from celeriac.pool.base import Pool
    from celeriac.transports.base import Delivery
    from celeriac.worker.state import WorkerState
    from celeriac.worker.timer import Entry, Timer

__all__ = ["Strategy"]

logger = logging.getLogger("celeriac.worker.strategy")


class Strategy:
    """The consumer's per-delivery callback, with everything it needs bound once."""

    def __init__(
        self,
        app: Celery,
        decoder: MessageDecoder,
        pool: Pool,
        timer: Timer,
        state: WorkerState,
        hostname: str,
        delivered: Callable[[Any], None],
        ack: Callable[[Any], None],
        reject: Callable[[Any, bool], None],
        hold: Callable[[], None],
        release: Callable[[], None],
        redelivery_after: float | None = None,
    ) -> None:
        self.app = app
        self.tasks = app.tasks
        self.revoke = app.executor.revoke
        self.unknown = app.executor.unknown
        self.decode = decoder.decode
        self.apply = pool.apply
        self.timer = timer
        self.state = state
        self.hostname = hostname
        self.delivered = delivered
        self.ack = ack
        self.reject = reject
        self.hold = hold
        self.release = release
        self.limiter = RateLimiter(timer, self.apply, hold, release)
        self._held: dict[str, Entry] = {}
        #: seconds after which the broker gives an unacked message to another consumer
        #: (Redis' visibility timeout); an ETA further away than that runs twice
        self.redelivery_after = redelivery_after

    def __call__(self, delivery: Delivery) -> None:
        tag = delivery.delivery_tag
        self.delivered(tag)
        try:
            message = self.decode(
                delivery.headers,
                delivery.properties,
                delivery.body,
                delivery.delivery_info,
                tag,
            )
        except DecodeError as exc:
            logger.critical(
                "can't decode message body: %s (headers=%r, body=%r); acked",
                exc,
                delivery.headers,
                delivery.body[:256],
            )
            self.ack(tag)
            return
        except UnknownMessageError as exc:
            logger.warning(
                "received and deleted unknown message: %s (body=%r)", exc, delivery.body[:256]
            )
            self.reject(tag, False)
            return
        except (ContentDisallowed, InvalidTaskError, MessageTooLarge) as exc:
            logger.error("received invalid task message: %s; rejected", exc)
            self.reject(tag, False)
            return
        task = self.tasks.get(message.name)
        if task is None:
            self._unknown_task(message, tag)
            return
        request = Request(message, task, self.ack, self.reject, self.hostname)
        if discard_if_revoked(request, self.state, self.revoke):
            return
        # after the revoked/expired check, as Celery's strategy sends it
        if signals.task_received.receivers:
            signals.task_received.send(sender=self, request=request)
        eta_at = message.eta_at
        if eta_at is not None and eta_at > time.time():
            # hold the message unacked until its time; raise prefetch so others keep flowing
            if self.redelivery_after is not None:
                self._warn_if_redelivered(message.id, eta_at)
            self.state.scheduled[message.id] = request
            self.hold()
            self._held[message.id] = self.timer.call_at(eta_at, self._eta_due, request)
            return
        self._run(request)

    def _warn_if_redelivered(self, task_id: str, eta_at: float) -> None:
        after = self.redelivery_after
        if after is not None and eta_at - time.time() > after:
            self.redelivery_after = None  # once per connection: the cause is the setting
            logger.warning(
                "task %s has an ETA %.0fs away, beyond the broker's visibility timeout "
                "(%gs): it will be delivered again, to this or another worker, before it "
                "is due and run twice; raise broker_transport_options['visibility_timeout']",
                task_id,
                eta_at - time.time(),
                after,
            )

    def _run(self, request: Request) -> None:
        rate_limit = request.task.rate_limit
        if rate_limit:
            self.limiter.submit(request, rate_limit)
        else:
            self.apply(request)

    def _eta_due(self, request: Request) -> None:
        self._held.pop(request.id, None)
        self.state.scheduled.pop(request.id, None)
        self.release()
        self._run(request)

    def discard_held(self) -> int:
        """Forget ETA and rate-limited requests: their connection is gone, so the broker will
        deliver them again and running these copies would run them twice."""
        entries, self._held = self._held, {}
        for entry in entries.values():
            entry.cancel()
        for request_id in entries:
            self.state.scheduled.pop(request_id, None)
        return len(entries) + self.limiter.discard()

    def _unknown_task(self, message: Any, tag: Any) -> None:
        logger.error(
            "received unregistered task of type %r; the message has been ignored and "
            "discarded (is the module that defines it imported by the worker?)",
            message.name,
        )
        self.reject(tag, False)
        if signals.task_unknown.receivers:
            signals.task_unknown.send(
                sender=self,
                name=message.name,
                id=message.id,
                message=message,
                exc=NotRegistered(message.name),
            )
        try:
            self.unknown(self.app, message)
        except Exception as exc:  # no backend, or it is down: the reject already happened
            logger.debug("could not store NotRegistered for %s: %r", message.id, exc)
