"""Consumer step: the broker connection the worker consumes on."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from celeriac.bootsteps import StartStopStep

if TYPE_CHECKING:
    from celeriac.worker.consumer.consumer import Consumer

__all__ = ["Connection"]

logger = logging.getLogger("celeriac.worker.consumer")


class Connection(StartStopStep):
    """Opens the consuming connection at start and closes it (requeueing unacked) at stop."""

    label = "Connection"

    def __init__(self, parent: Consumer, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)

    def start(self, parent: Consumer) -> None:
        transport = parent.app.connection()
        transport.connect()
        parent.transport = transport
        logger.info("connected to %s", _masked(transport.url))

    def stop(self, parent: Consumer) -> None:
        transport = parent.transport
        if transport is not None:
            try:
                transport.close()
            finally:
                parent.transport = None

    def shutdown(self, parent: Consumer) -> None:
        self.stop(parent)


def _masked(url: str) -> str:
    """The URL with its password replaced by ``**`` (never log credentials)."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:**@{host}"
