"""The interface every execution pool implements (solo, threads, prefork)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from celeriac.worker.request import Request

__all__ = ["Pool"]


class Pool(Protocol):
    """Runs requests; ``apply`` must not block the consumer loop longer than the pool needs."""

    limit: int

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def terminate(self) -> None: ...

    def apply(self, request: Request) -> None: ...

    def info(self) -> dict[str, Any]: ...
