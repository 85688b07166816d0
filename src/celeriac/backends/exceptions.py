"""Exceptions to and from Celery's result format (``exc_type``/``exc_message``/``exc_module``)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from celeriac import errors
from celeriac.errors import CELERY_EXCEPTION_MODULES, SecurityError

__all__ = ["exception_from_dict", "exception_to_dict"]

_OUR_CLASSES: dict[str, type[BaseException]] = {
    name: getattr(errors, name) for name in CELERY_EXCEPTION_MODULES if hasattr(errors, name)
}
_FOREIGN_MODULES = frozenset(CELERY_EXCEPTION_MODULES.values()) | {"celeriac.errors"}
_synthetic: dict[tuple[str, str], type[BaseException]] = {}


def exception_to_dict(exc: BaseException, is_serializable: Callable[[Any], bool]) -> dict[str, Any]:
    """Encode ``exc`` as Celery does; an argument that cannot be serialized becomes its repr."""
    cls = type(exc)
    module = cls.__module__
    if module == "celeriac.errors" and cls.__name__ in CELERY_EXCEPTION_MODULES:
        # travel under Celery's module so a Celery client rebuilds its own class
        module = CELERY_EXCEPTION_MODULES[cls.__name__]
    args = [a if is_serializable(a) else repr(a) for a in exc.args]
    return {"exc_type": cls.__qualname__, "exc_message": args, "exc_module": module}


def exception_from_dict(meta: Any) -> BaseException:
    """Rebuild an exception; refuse (SecurityError) a class that is not an exception."""
    if not isinstance(meta, dict) or "exc_type" not in meta:
        return Exception(meta)
    exc_type = str(meta["exc_type"])
    module = meta.get("exc_module")
    message = meta.get("exc_message", [])
    cls = _resolve(exc_type, module)
    try:
        if isinstance(message, (list, tuple)):
            return cls(*message)
        return cls(message)
    except Exception:
        # the class's __init__ wants other arguments; keep the message readable anyway
        exc = cls.__new__(cls)
        exc.args = tuple(message) if isinstance(message, (list, tuple)) else (message,)
        return exc


def _resolve(exc_type: str, module: Any) -> type[BaseException]:
    if module in _FOREIGN_MODULES and exc_type in _OUR_CLASSES:
        return _OUR_CLASSES[exc_type]
    if module is None:
        module = "builtins"
    obj: Any
    try:
        obj = importlib.import_module(str(module))
        for part in exc_type.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError, ValueError):
        return _synthesize(exc_type, str(module))
    if not (isinstance(obj, type) and issubclass(obj, BaseException)):
        raise SecurityError(
            f"refusing to rebuild result exception {module}.{exc_type}: not an exception class"
        )
    return obj


def _synthesize(exc_type: str, module: str) -> type[BaseException]:
    key = (module, exc_type)
    cls = _synthetic.get(key)
    if cls is None:
        cls = type(exc_type.rsplit(".", 1)[-1], (Exception,), {"__module__": module})
        _synthetic[key] = cls
    return cls
