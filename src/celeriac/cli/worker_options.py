"""``celeriac worker`` options beyond the basics: pool names, the pid file, and the Celery
flags celeriac refuses by name rather than ignore."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import click

__all__ = ["POOLS", "pid_file", "pool_name", "unsupported_options"]

POOLS = ("prefork", "threads", "solo")
_POOL_ALIASES = {"processes": "prefork"}

F = TypeVar("F", bound=Callable[..., Any])

#: Celery worker flags celeriac does not support yet, with what to do instead.
_UNSUPPORTED: tuple[tuple[tuple[str, ...], bool, str], ...] = (
    (("-B", "--beat"), True, "run `celery -A proj beat` as its own process"),
    (("-s", "--schedule", "--schedule-filename"), False, "it belongs to beat"),
    (("--scheduler",), False, "it belongs to beat"),
    (("-S", "--statedb"), False, "revoked ids are kept in memory only"),
    (("-D", "--detach"), True, "run the worker under a process supervisor"),
    (("--uid",), False, "start the worker as that user"),
    (("--gid",), False, "start the worker as that group"),
    (("--umask",), False, "set the umask before starting the worker"),
    (("--purge", "--discard"), True, "purge with `celery -A proj purge`"),
    (("--executable",), False, "the pool forks this interpreter"),
    (("-I", "--include"), False, "set `include` in the app's configuration"),
    (("--hostname-prefix",), False, "use -n"),
)


def _refuse(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value:
        name = "/".join(param.opts)
        raise click.UsageError(f"{name} is not supported by celeriac worker ({_HINTS[name]})")
    return value


_HINTS = {"/".join(decls): hint for decls, _, hint in _UNSUPPORTED}


def unsupported_options(fun: F) -> F:
    """Add each flag of :data:`_UNSUPPORTED`; giving one is a usage error naming it."""
    for decls, is_flag, _ in reversed(_UNSUPPORTED):
        option = click.option(
            *decls,
            is_flag=is_flag,
            default=None,
            expose_value=False,
            hidden=True,
            callback=_refuse,
        )
        fun = option(fun)
    return fun


def pool_name(value: str) -> str:
    """``-P``: one of :data:`POOLS` (``processes`` is Celery's alias of ``prefork``)."""
    name = _POOL_ALIASES.get(value, value)
    if name not in POOLS:
        raise click.BadParameter(
            f"pool {value!r} is not supported by celeriac (pools: {', '.join(POOLS)})",
            param_hint="-P",
        )
    return name


@contextlib.contextmanager
def pid_file(path: str | None) -> Iterator[None]:
    """Write this process's pid to ``path`` while the block runs, as ``--pidfile`` does in
    Celery: refuse when it names a process that is still running, replace a stale one."""
    if not path:
        yield
        return
    path = os.path.abspath(path)
    try:
        with open(path) as fh:
            old = int(fh.read().strip() or 0)
    except (OSError, ValueError):
        old = 0
    if old and old != os.getpid() and _alive(old):
        raise click.ClickException(f"pid file {path!r} names running process {old}")
    with open(path, "w") as fh:
        fh.write(f"{os.getpid()}\n")
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM
    return True
