"""The one switch between the compiled hot path (``celeriac._speedups``) and its pure twin.

``CELERIAC_NO_EXTENSIONS=1`` always picks the pure twin. ``CELERIAC_REQUIRE_EXTENSIONS=1``
makes a missing compiled module an import error instead of a silent fallback, so a broken build
cannot pass as "pure". Nothing else in celeriac knows that there are two implementations.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import TYPE_CHECKING

__all__ = ["SPEEDUPS", "amqp_codec", "consumer", "message", "supervisor"]

NO_EXTENSIONS = os.environ.get("CELERIAC_NO_EXTENSIONS") == "1"
REQUIRE_EXTENSIONS = os.environ.get("CELERIAC_REQUIRE_EXTENSIONS") == "1"

_BUILD_HINT = (
    "build them with `pip install .` (or `python setup.py build_ext --inplace` in a checkout); "
    "that needs Cython 3 and a C compiler"
)


def load(name: str) -> tuple[ModuleType, bool]:
    """Return ``(module, compiled)`` for hot-path module ``name`` under the current switches."""
    if NO_EXTENSIONS and REQUIRE_EXTENSIONS:
        raise ImportError(
            "celeriac: CELERIAC_NO_EXTENSIONS=1 and CELERIAC_REQUIRE_EXTENSIONS=1 contradict "
            "each other; unset one"
        )
    if not NO_EXTENSIONS:
        try:
            return importlib.import_module(f"celeriac._speedups.{name}"), True
        except ImportError as exc:
            if REQUIRE_EXTENSIONS:
                raise ImportError(
                    f"celeriac: CELERIAC_REQUIRE_EXTENSIONS=1 but the compiled module "
                    f"celeriac._speedups.{name} is not importable ({exc}); {_BUILD_HINT}"
                ) from exc
    return importlib.import_module(f"celeriac._speedups_py.{name}"), False


if TYPE_CHECKING:
    from celeriac._speedups_py import amqp_codec, consumer, message, supervisor

    SPEEDUPS: str
else:
    message, _compiled = load("message")
    amqp_codec, _ = load("amqp_codec")
    consumer, _ = load("consumer")
    supervisor, _ = load("supervisor")
    SPEEDUPS = "compiled" if _compiled else "pure"
