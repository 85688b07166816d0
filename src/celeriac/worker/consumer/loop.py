"""The consumer's event loop: broker, pool and timer in one thread (docs/internals/event-loop)."""

from __future__ import annotations

import contextlib
import os
import selectors
from typing import TYPE_CHECKING, Any

from celeriac.errors import ChannelError

if TYPE_CHECKING:
    from celeriac.transports.base import Transport
    from celeriac.worker.consumer.consumer import Consumer

__all__ = ["Waker", "run_loop"]

# the longest the loop sleeps before it looks at the timer, the stop flag and the broker's
# heartbeat check again
MAX_WAIT = 1.0

_TRANSPORT, _WAKE, _POOL = 0, 1, 2


class Waker:
    """A pipe that makes the loop's select return (stop requests, threads finishing tasks)."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self.write_fd, False)
        self.closed = False

    def wake(self) -> None:
        if self.closed:
            return  # the descriptor number may belong to someone else by now
        with contextlib.suppress(OSError):  # full: the loop wakes anyway
            os.write(self.write_fd, b"\0")

    def drain(self) -> None:
        try:
            while os.read(self.read_fd, 4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for fd in (self.read_fd, self.write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


def _min_wait(*values: float | None) -> float:
    wait = MAX_WAIT
    for value in values:
        if value is not None and value < wait:
            wait = max(0.0, value)
    return wait


def run_loop(consumer: Consumer) -> None:
    """Run until the consumer is asked to stop; raise on a lost connection."""
    transport = consumer.transport
    assert transport is not None
    filenos = getattr(transport, "filenos", None)
    if filenos is None:
        _blocking_loop(consumer, transport)
    else:
        _select_loop(consumer, transport, tuple(filenos()))


def _check_cancelled(cancelled: set[str]) -> None:
    # the broker cancels a consumer when its queue is deleted (consumer_cancel_notify)
    if cancelled:
        tags = sorted(cancelled)
        cancelled.clear()
        raise ChannelError(
            f"the broker cancelled consumer(s) {', '.join(tags)} (queue deleted?); "
            "declaring and consuming again"
        )


def _select_loop(consumer: Consumer, transport: Transport, transport_fds: tuple[int, ...]) -> None:
    pool = consumer.pool
    drain = transport.drain_events
    run_due = consumer.timer.run_due
    stopping = consumer.should_stop_now
    acks = consumer.acks
    flush_acks = acks.flush if acks is not None else None
    cancelled: set[str] = getattr(transport, "cancelled_by_broker", set())
    waker = consumer.waker
    pool_tick, pool_flush = pool.tick, pool.flush
    pool_filenos, on_readable = pool.filenos, pool.on_readable

    selector = selectors.DefaultSelector()
    try:
        for fd in transport_fds:
            selector.register(fd, selectors.EVENT_READ, _TRANSPORT)
        selector.register(waker.read_fd, selectors.EVENT_READ, _WAKE)
        registered: tuple[int, ...] = ()
        while not stopping():
            timer_wait = run_due()
            pool_wait = pool_tick()
            current = tuple(pool_filenos())
            if current != registered:
                registered = _reregister(selector, registered, current)
            pool_flush()
            # While deliveries keep coming, acks go out in full batches (the batcher sends at
            # 64): each ack costs the broker real work, and small ones cost it the most. Before
            # the loop actually blocks, whatever is pending goes out, so a quiet queue never
            # sits on unsent acks.
            events = selector.select(0)
            if not events:
                if flush_acks is not None:
                    flush_acks()
                events = selector.select(_min_wait(timer_wait, pool_wait))
            drained = False
            for key, _ in events:
                kind: Any = key.data
                if kind == _TRANSPORT:
                    if not drained:
                        drain(0)
                        drained = True
                elif kind == _WAKE:
                    waker.drain()
                else:
                    on_readable(key.fd)
            if not drained and not events:
                drain(0)  # an idle second: let the transport check the broker's heartbeats
            _check_cancelled(cancelled)
    finally:
        selector.close()


def _reregister(
    selector: selectors.BaseSelector, old: tuple[int, ...], new: tuple[int, ...]
) -> tuple[int, ...]:
    for fd in set(old) - set(new):
        with contextlib.suppress(KeyError, ValueError):  # already closed by the pool
            selector.unregister(fd)
    for fd in set(new) - set(old):
        selector.register(fd, selectors.EVENT_READ, _POOL)
    return new


def _blocking_loop(consumer: Consumer, transport: Transport) -> None:
    """For transports without descriptors: wait in the broker, short slices."""
    pool = consumer.pool
    pool_tick, pool_flush = pool.tick, pool.flush
    drain = transport.drain_events
    run_due = consumer.timer.run_due
    stopping = consumer.should_stop_now
    acks = consumer.acks
    cancelled: set[str] = getattr(transport, "cancelled_by_broker", set())
    while not stopping():
        wait = _min_wait(run_due(), pool_tick())
        pool_flush()
        if acks is not None:
            acks.flush()
        drain(wait)
        _check_cancelled(cancelled)
