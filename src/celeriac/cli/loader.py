"""Find the app named by ``-A``, the way Celery does."""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType
from typing import Any

from celeriac.app import Celery
from celeriac.errors import ConfigurationError

__all__ = ["find_app"]


def find_app(spec: str) -> Celery:
    """``proj``, ``proj:app``, ``proj.celery``, ``proj.app`` or the first app in ``proj``."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module_name, _, attr = spec.partition(":")
    if attr:
        return _check(_getattr_path(_import(module_name, spec), attr, spec), spec)
    try:
        module = _import(module_name, spec)
    except ConfigurationError:
        # ``proj.app`` where ``app`` is an attribute, not a module
        parent, _, attr = module_name.rpartition(".")
        if not parent:
            raise
        return _check(_getattr_path(_import(parent, spec), attr, spec), spec)
    found = _app_in(module)
    if found is not None:
        return found
    # Celery also looks for a ``celery`` submodule (``proj/celery.py``)
    if hasattr(module, "__path__"):
        try:
            sub = importlib.import_module(f"{module_name}.celery")
        except ModuleNotFoundError as exc:
            if exc.name != f"{module_name}.celery":
                raise
        else:
            found = _app_in(sub)
            if found is not None:
                return found
    raise ConfigurationError(f"module {module_name!r} has no celeriac app (-A {spec})")


def _import(name: str, spec: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and name.startswith(exc.name):
            raise ConfigurationError(f"cannot find the app module {name!r} (-A {spec})") from exc
        raise


def _getattr_path(obj: Any, path: str, spec: str) -> Any:
    for part in path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigurationError(f"-A {spec}: no attribute {part!r}") from None
    return obj


def _app_in(module: ModuleType) -> Celery | None:
    for name in ("app", "celery"):
        value = getattr(module, name, None)
        if isinstance(value, Celery):
            return value
        _refuse_foreign(value)
    for value in vars(module).values():
        if isinstance(value, Celery):
            return value
    for value in vars(module).values():
        _refuse_foreign(value)
    return None


def _check(value: Any, spec: str) -> Celery:
    if isinstance(value, Celery):
        return value
    _refuse_foreign(value)
    if callable(value):
        made = value()
        if isinstance(made, Celery):
            return made
    raise ConfigurationError(f"-A {spec} does not name a celeriac app (got {type(value)!r})")


def _refuse_foreign(value: Any) -> None:
    cls = type(value)
    if cls.__name__ == "Celery" and cls.__module__.startswith("celery."):
        raise ConfigurationError(
            "this -A names a celery.Celery app; running Celery apps unchanged is not "
            "supported in this version yet: define the app with celeriac.Celery"
        )
