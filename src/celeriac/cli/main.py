"""The ``celeriac`` command; the only place that configures logging."""

from __future__ import annotations

import platform
from typing import Any

import click

from celeriac import __version__

__all__ = ["main"]


def version_line() -> str:
    from celeriac._accel import SPEEDUPS

    return (
        f"celeriac {__version__} (Python {platform.python_version()}, "
        f"{platform.python_implementation()}; speedups: {SPEEDUPS})"
    )


def _print_version(ctx: click.Context, _: Any, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(version_line())
        ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the version and which hot path runs.",
)
@click.option(
    "-A",
    "--app",
    "app_spec",
    default=None,
    metavar="MODULE",
    help="The app: 'proj', 'proj:app' or 'proj.celery'.",
)
@click.option("-b", "--broker", default=None, help="Broker URL (overrides broker_url).")
@click.option("--result-backend", default=None, help="Result backend URL.")
@click.pass_context
def main(
    ctx: click.Context, app_spec: str | None, broker: str | None, result_backend: str | None
) -> None:
    """celeriac: a Celery-compatible task-queue worker with a compiled hot path."""
    ctx.ensure_object(dict)
    ctx.obj.update(app=app_spec, broker=broker, result_backend=result_backend)


def _register() -> None:
    from celeriac.cli.bench import bench
    from celeriac.cli.worker import worker

    main.add_command(worker)
    main.add_command(bench)


_register()
