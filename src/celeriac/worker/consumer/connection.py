"""Consumer step: the broker connection the worker consumes on."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from celeriac.bootsteps import StartStopStep
from celeriac.urls import mask_url

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
        logger.info("connected to %s", mask_url(transport.url))

    def stop(self, parent: Consumer) -> None:
        transport = parent.transport
        if transport is not None:
            try:
                transport.close()
            finally:
                parent.transport = None

    def shutdown(self, parent: Consumer) -> None:
        self.stop(parent)
