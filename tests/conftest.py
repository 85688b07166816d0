"""Shared fixtures: both implementations of the hot path, and a clean embedded broker."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from types import ModuleType

import pytest

NO_EXTENSIONS = os.environ.get("CELERIAC_NO_EXTENSIONS") == "1"
REQUIRE_EXTENSIONS = os.environ.get("CELERIAC_REQUIRE_EXTENSIONS") == "1"

ImplLoader = Callable[[str], ModuleType]


def load_impl(kind: str, name: str) -> ModuleType:
    """Import hot-path module ``name`` as ``kind`` ("compiled" or "pure")."""
    if kind == "pure":
        return importlib.import_module(f"celeriac._speedups_py.{name}")
    if NO_EXTENSIONS:
        pytest.skip("this run covers the pure twin only (CELERIAC_NO_EXTENSIONS=1)")
    try:
        return importlib.import_module(f"celeriac._speedups.{name}")
    except ImportError:
        if REQUIRE_EXTENSIONS:
            raise
        pytest.skip("compiled speedups are not built in this checkout")


@pytest.fixture(params=["compiled", "pure"])
def impl(request: pytest.FixtureRequest) -> ImplLoader:
    """Run a test once per implementation: ``impl("message").MessageDecoder``."""
    kind = request.param

    def loader(name: str) -> ModuleType:
        return load_impl(kind, name)

    return loader
