"""The machine and software a bench run measured: cores, CPU model, memory, versions."""

from __future__ import annotations

import os
import platform
from typing import Any

import psutil  # type: ignore[import-untyped]

from celeriac import __version__

__all__ = ["environment"]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict[str, Any]:
    """Machine, Python and celeriac, as the report's ``environment`` shows them."""
    from celeriac._accel import SPEEDUPS

    return {
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "memory_bytes": psutil.virtual_memory().total,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "celeriac": __version__,
        "speedups": SPEEDUPS,
    }
