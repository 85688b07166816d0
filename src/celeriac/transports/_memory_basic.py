"""The embedded broker's ``basic.*`` methods: publish, qos, consume, drain, get, ack and reject."""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Mapping
from time import monotonic
from typing import Any

from celeriac.errors import ChannelError
from celeriac.transports._memory_channel import Channel, Consumer, Notifier
from celeriac.transports._memory_queue import copy_map
from celeriac.transports._memory_vhost import VHost
from celeriac.transports.base import Delivery, DeliveryCallback

__all__ = ["BasicMethods"]

_consumer_ids = itertools.count(1)


class BasicMethods(VHost):
    """The AMQP ``basic.*`` methods of a virtual host: messages in, out and settled."""

    def publish(
        self,
        ch: Channel,
        body: bytes,
        exchange: str,
        routing_key: str,
        headers: Mapping[str, Any] | None,
        properties: Mapping[str, Any] | None,
        mandatory: bool,
    ) -> None:
        # Copied before taking the lock: the publisher may reuse its dicts afterwards.
        hdrs = copy_map(headers) if headers is not None else None
        props = copy_map(properties) if properties else {}
        with self.lock:
            operation = f"publish to exchange {exchange!r}"
            self._check(ch, operation)
            ex = self._lookup_exchange(ch, exchange, operation)
            expiration = props.get("expiration")
            ttl = None if expiration is None else self._parse_expiration(ch, expiration)
            if self._ttl_queues:
                self._expire_due()
            names = ex.route(routing_key, hdrs)
            if not self._route(names, body, hdrs, props, exchange, routing_key, ttl) and mandatory:
                raise ChannelError(
                    f"cannot publish to exchange {exchange!r} with routing key {routing_key!r}: "
                    "no queue is bound to take it (312 NO_ROUTE)"
                )

    def _parse_expiration(self, ch: Channel, value: Any) -> int:
        if isinstance(value, str) and value.isdigit():
            return int(value)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        self._fail(ch, 406, f"cannot publish: invalid expiration {value!r}, want ms as a string")

    def qos(self, ch: Channel, prefetch_count: int) -> None:
        if prefetch_count < 0:
            raise ValueError(f"cannot set qos: prefetch_count {prefetch_count} is negative")
        with self.lock:
            self._check(ch, "set qos")
            ch.prefetch = prefetch_count
            for c in list(ch.consumers.values()):
                self._dispatch(c.queue)

    def consume(
        self,
        ch: Channel,
        queue: str,
        callback: DeliveryCallback,
        no_ack: bool,
        consumer_tag: str | None,
    ) -> str:
        with self.lock:
            self._check(ch, f"consume from queue {queue!r}")
            q = self._lookup_queue(ch, queue)
            tag = consumer_tag or f"amq.ctag-{next(_consumer_ids)}"
            if tag in ch.consumers:
                self._fail(
                    ch, 530, f"cannot consume from queue {queue!r}: consumer tag {tag!r} is in use"
                )
            c = Consumer(tag, q, ch, callback, no_ack)
            ch.consumers[tag] = c
            q.consumers.append(c)
            self._dispatch(q)
            return tag

    def cancel(self, ch: Channel, consumer_tag: str) -> None:
        with self.lock:
            self._check(ch, f"cancel consumer {consumer_tag!r}")
            c = ch.consumers.pop(consumer_tag, None)
            if c is None:
                return
            # Deliveries assigned to it that the application never saw go back to the queue;
            # those it saw stay unacked until acked, rejected or the channel closes.
            mine = [m for k, m in ch.ready if k is c]
            if mine:
                ch.ready = deque(item for item in ch.ready if item[0] is not c)
            q = c.queue
            for msg in reversed(mine):
                if not q.deleted:
                    self._requeue(q, msg)
            self._remove_consumer(c)
            if not c.no_ack and mine:
                self._release(ch, len(mine))
            if not q.deleted:
                self._dispatch(q)

    def drain(self, ch: Channel, timeout: float | None) -> int:
        with self.lock:
            self._check(ch, "drain events")
            deadline = None if timeout is None or ch.ready else monotonic() + timeout
            while not ch.ready and not ch.woken:
                # Expiry runs here too, so a consumer of a dead-letter queue sees expired
                # messages arrive even when nobody publishes or polls the source queue.
                upcoming = self._expire_due()
                if ch.ready:
                    break
                wait = None if deadline is None else deadline - monotonic()
                if wait is not None and wait <= 0:
                    break
                if upcoming is not None:
                    until = max(upcoming - monotonic(), 0.0)
                    wait = until if wait is None else min(wait, until)
                ch.cond.wait(wait)
                self._check(ch, "drain events")
            ch.woken = False
            if ch.notifier is not None:
                ch.notifier.clear()
            budget = len(ch.ready)
        # At most what was ready on entry, so a busy producer cannot keep us here forever.
        count = 0
        try:
            while count < budget:
                with self.lock:
                    if not ch.ready or not ch.open:
                        break
                    c, msg = ch.ready.popleft()
                    tag = ch.next_tag
                    ch.next_tag = tag + 1
                    if not c.no_ack:
                        ch.unacked[tag] = (c.queue, msg)
                    info = msg.delivery_info(c.tag)
                c.callback(msg.delivery(info, tag))
                count += 1
        finally:
            if ch.notifier is not None:
                with self.lock:
                    # Left over after a callback raised: the loop must come back for them.
                    if ch.ready:
                        ch.notifier.set()
        return count

    def wakeup(self, ch: Channel) -> None:
        with self.lock:
            ch.woken = True
            ch.notify()

    def attach_notifier(self, ch: Channel, notifier: Notifier) -> None:
        """Make ``notifier`` readable whenever ``ch`` has work for ``drain_events``."""
        with self.lock:
            if ch.notifier is not None and ch.notifier is not notifier:
                ch.notifier.close()
            ch.notifier = notifier
            notifier.clear()
            if ch.ready or ch.woken or not ch.open:
                notifier.set()

    def detach_notifier(self, ch: Channel) -> None:
        """Close ``ch``'s notifier, if it has one (under the lock, so nobody writes to it)."""
        with self.lock:
            notifier, ch.notifier = ch.notifier, None
            if notifier is not None:
                notifier.close()

    def basic_get(self, ch: Channel, queue: str, no_ack: bool) -> Delivery | None:
        with self.lock:
            self._check(ch, f"get from queue {queue!r}")
            q = self._lookup_queue(ch, queue)
            self._expire_due()
            msg = q.pop()
            if msg is None:
                return None
            tag = ch.next_tag
            ch.next_tag = tag + 1
            if not no_ack:
                ch.unacked[tag] = (q, msg)
                ch.held += 1
            info = msg.delivery_info(None)
            info["message_count"] = q.size
        return msg.delivery(info, tag)

    def ack(self, ch: Channel, delivery_tag: int, multiple: bool) -> None:
        with self.lock:
            self._check(ch, f"ack delivery tag {delivery_tag}")
            unacked = ch.unacked
            if multiple and delivery_tag == 0:
                count = len(unacked)
                unacked.clear()
            elif delivery_tag not in unacked:
                self._fail(ch, 406, f"cannot ack: unknown delivery tag {delivery_tag}")
            elif multiple:
                count = 0
                while unacked and next(iter(unacked)) <= delivery_tag:
                    unacked.popitem(last=False)
                    count += 1
            else:
                del unacked[delivery_tag]
                count = 1
            self._release(ch, count)

    def reject(self, ch: Channel, delivery_tag: int, requeue: bool) -> None:
        with self.lock:
            self._check(ch, f"reject delivery tag {delivery_tag}")
            entry = ch.unacked.pop(delivery_tag, None)
            if entry is None:
                self._fail(ch, 406, f"cannot reject: unknown delivery tag {delivery_tag}")
            q, msg = entry
            self._release(ch, 1)
            if q.deleted:
                return
            if requeue:
                msg.redelivered = True
                self._requeue(q, msg)
                self._dispatch(q)
            else:
                self._dead_letter(q, msg, "rejected")
