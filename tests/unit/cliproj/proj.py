"""A tiny project for the CLI tests: it queues its own work on the embedded broker."""

from __future__ import annotations

import os

from celeriac import Celery

app = Celery("proj", broker="memory://cliproj", backend="memory://cliproj")


@app.task(name="proj.touch")
def touch(path: str) -> None:
    # written whole, then renamed: the test reads it as soon as it exists
    with open(f"{path}.tmp", "w", encoding="utf-8") as fh:
        fh.write(str(os.getpid()))
    os.replace(f"{path}.tmp", path)


if os.environ.get("CLIPROJ_TOUCH"):
    touch.delay(os.environ["CLIPROJ_TOUCH"])
