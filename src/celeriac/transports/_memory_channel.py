"""The broker side of a memory transport's channel: its consumers and deliveries in flight."""

from __future__ import annotations

import threading
from collections import OrderedDict, deque

from celeriac.errors import ChannelError, TransportError
from celeriac.transports._memory_queue import Message, Queue
from celeriac.transports.base import DeliveryCallback

__all__ = ["Channel", "Consumer"]


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


class Channel:
    """The broker side of one transport's channel."""

    __slots__ = (
        "closed_by",
        "cond",
        "consumers",
        "held",
        "next_tag",
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
