"""The broker side of a memory transport's channel: its consumers and deliveries in flight."""

from __future__ import annotations

import contextlib
import os
import threading
from collections import OrderedDict, deque

from celeriac.errors import ChannelError, TransportError
from celeriac.transports._memory_queue import Message, Queue
from celeriac.transports.base import DeliveryCallback

__all__ = ["Channel", "Consumer", "Notifier"]


class Consumer:
    """One ``basic.consume`` of a queue by a channel."""

    __slots__ = ("callback", "channel", "no_ack", "queue", "tag")

    def __init__(
        self, tag: str, queue: Queue, channel: Channel, callback: DeliveryCallback, no_ack: bool
    ) -> None:
        self.tag = tag
        self.queue = queue
        self.channel = channel
        self.callback = callback
        self.no_ack = no_ack


class Notifier:
    """A pipe that is readable while a channel has work for ``drain_events``.

    :meth:`set` and :meth:`clear` run under the broker lock; at most one byte is ever in the
    pipe, so a busy publisher never fills it and a drain empties it with one read.
    """

    __slots__ = ("_r", "_w", "closed", "pending")

    def __init__(self) -> None:
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)
        self.pending = False
        self.closed = False

    def fileno(self) -> int:
        return self._r

    def set(self) -> None:
        if not self.pending and not self.closed:
            self.pending = True
            os.write(self._w, b"\0")

    def clear(self) -> None:
        if self.pending and not self.closed:
            self.pending = False
            with contextlib.suppress(BlockingIOError):
                os.read(self._r, 64)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self._r)
            os.close(self._w)


class Channel:
    """The broker side of one transport's channel."""

    __slots__ = (
        "closed_by",
        "cond",
        "consumers",
        "held",
        "next_tag",
        "notifier",
        "open",
        "owner",
        "prefetch",
        "ready",
        "reason",
        "unacked",
        "woken",
    )

    def __init__(self, lock: threading.Lock, owner: object) -> None:
        self.cond = threading.Condition(lock)
        self.owner = owner
        self.open = True
        self.closed_by: type[TransportError] = ChannelError
        self.reason = ""
        # Assigned to a consumer, waiting for drain_events to hand it to the callback.
        self.ready: deque[tuple[Consumer, Message]] = deque()
        # Tag order is insertion order, so ack(multiple=True) pops from the front.
        self.unacked: OrderedDict[int, tuple[Queue, Message]] = OrderedDict()
        # Deliveries needing an ack that this channel holds, ready or unacked: what qos limits.
        self.held = 0
        self.prefetch = 0
        self.next_tag = 1
        self.consumers: dict[str, Consumer] = {}
        self.woken = False
        # The owning transport's pipe once it asked for filenos(); set whenever ready or woken.
        self.notifier: Notifier | None = None

    def notify(self) -> None:
        """Wake a drain waiting on the condition and make the notifier readable (under lock)."""
        self.cond.notify_all()
        if self.notifier is not None:
            self.notifier.set()
