"""Find the app named by ``-A``, the way Celery does."""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType
from typing import Any

from celeriac.app import Celery
from celeriac.compat.celery import is_celery_app
from celeriac.errors import ConfigurationError

__all__ = ["find_app"]


def find_app(spec: str) -> Celery:
    """``proj``, ``proj:app``, ``proj.celery``, ``proj.app`` or the first app in ``proj``.

    The app may be a celeriac app or a ``celery.Celery`` app; the latter comes back as a
    :class:`~celeriac.compat.celery.CeleryHost` that runs it unchanged.
    """
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
    raise ConfigurationError(f"module {module_name!r} has no celeriac or Celery app (-A {spec})")


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


def _is_app(value: Any) -> bool:
    return isinstance(value, Celery) or is_celery_app(value)


def _app_in(module: ModuleType) -> Celery | None:
    for name in ("app", "celery"):
        value = getattr(module, name, None)
        if _is_app(value):
            return _host(value)
    for value in vars(module).values():
        if _is_app(value):
            return _host(value)
    return None


def _check(value: Any, spec: str) -> Celery:
    if _is_app(value):
        return _host(value)
    if callable(value):
        made = value()
        if _is_app(made):
            return _host(made)
    raise ConfigurationError(
        f"-A {spec} does not name a celeriac or Celery app (got {type(value)!r})"
    )


def _host(value: Any) -> Celery:
    """A celeriac app as it is; a ``celery.Celery`` app behind a :class:`CeleryHost`."""
    if isinstance(value, Celery):
        return value
    from celeriac.compat.celery import CeleryHost

    return CeleryHost(value)
