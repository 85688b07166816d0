"""The interface every execution pool implements (solo, threads, prefork)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from celeriac.worker.request import Request

__all__ = ["Pool"]


class Pool(Protocol):
    """Runs requests for the consumer loop (see ``docs/internals/event-loop.md``).

    Every member but :meth:`info` and the life cycle is called from the loop's thread, and
    every ack or reject of a request reaches the consumer in that thread.
    """

    limit: int
    """How many tasks run at once (the prefetch is a multiple of it)."""

    def start(self) -> None: ...

    def stop(self) -> None:
        """Warm stop: wait for the running tasks; those not started stay unacked."""

    def terminate(self) -> None:
        """Cold stop: do not wait (kill what can be killed)."""

    def apply(self, request: Request) -> None:
        """Hand ``request`` over; never blocks the loop (solo runs it inline)."""

    def filenos(self) -> tuple[int, ...]:
        """Descriptors the loop waits on with the transport's; may change between calls
        (children replaced). Empty for pools that wake the loop another way."""

    def on_readable(self, fd: int) -> None:
        """Read what is ready on ``fd`` (one of :meth:`filenos`) and settle its requests."""

    def flush(self) -> None:
        """Write batched work to the children; called before each wait."""

    def tick(self) -> float | None:
        """Periodic work (time limits, recycling, settling results); return the seconds
        until it needs to run again, or ``None`` for no deadline."""

    def info(self) -> dict[str, Any]:
        """Pool stats: ``implementation``, ``max-concurrency``, ``processes``..."""
