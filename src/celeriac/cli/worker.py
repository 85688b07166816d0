"""``celeriac worker``: start a worker, with Celery's flags."""

from __future__ import annotations

import logging
import signal
from types import FrameType
from typing import Any

import click

from celeriac.cli.worker_options import pid_file, pool_name, unsupported_options
from celeriac.errors import CeleriacError
from celeriac.urls import mask_url

__all__ = ["worker"]

logger = logging.getLogger("celeriac.cli")


@click.command()
@click.option(
    "-A",
    "--app",
    "app_spec",
    default=None,
    metavar="MODULE",
    help="The app: 'proj', 'proj:app' or 'proj.celery'.",
)
@click.option("-b", "--broker", default=None, help="Broker URL.")
@click.option("--result-backend", default=None, help="Result backend URL.")
@click.option("-Q", "--queues", default=None, help="Comma-separated queues to consume.")
@click.option("-X", "--exclude-queues", default=None, help="Comma-separated queues not to consume.")
@click.option("-c", "--concurrency", type=int, default=None, help="Parallel tasks.")
@click.option(
    "-P",
    "--pool",
    default=None,
    help="Execution pool: prefork (child processes; the default), threads, or solo (inline).",
)
@click.option(
    "--prefetch-multiplier",
    type=int,
    default=None,
    help="worker_prefetch_multiplier (0 = unlimited).",
)
@click.option("-n", "--hostname", default=None, help="Node name (%h, %n, %d expand).")
@click.option("-l", "--loglevel", default="WARNING", show_default=True, help="Log level.")
@click.option("-f", "--logfile", default=None, help="Log to this file instead of stderr.")
@click.option(
    "--max-tasks-per-child",
    type=int,
    default=None,
    help="Replace a child process after this many tasks.",
)
@click.option(
    "--max-memory-per-child",
    type=int,
    default=None,
    help="Replace a child process whose resident memory passes this many KiB.",
)
@click.option("--time-limit", type=float, default=None, help="Hard time limit (seconds).")
@click.option(
    "--soft-time-limit",
    type=float,
    default=None,
    help="Soft time limit (seconds): SoftTimeLimitExceeded is raised in the task.",
)
@click.option(
    "-O",
    "optimization",
    type=click.Choice(["default", "fair"]),
    default="default",
    help="fair: give work only to idle child processes.",
)
@click.option(
    "--autoscale",
    default=None,
    metavar="MAX,MIN",
    help="Grow and shrink the pool between MIN and MAX processes.",
)
@click.option(
    "--start-method",
    type=click.Choice(["fork", "spawn"]),
    default=None,
    help="How prefork children start (worker_start_method, default fork); spawn imports "
    "the app again in each child.",
)
@click.option(
    "-E",
    "--task-events",
    is_flag=True,
    default=None,
    help="Send task events (Celery apps; worker_send_task_events).",
)
@click.option(
    "--heartbeat-interval",
    type=float,
    default=None,
    help="Seconds between worker heartbeat events (Celery apps; default 2).",
)
@click.option("--pidfile", default=None, help="Write the worker's pid to this file.")
@click.option(
    "--without-gossip", is_flag=True, help="Accepted for Celery; celeriac does not gossip."
)
@click.option(
    "--without-mingle", is_flag=True, help="Accepted for Celery; celeriac does not mingle."
)
@click.option(
    "--without-heartbeat",
    is_flag=True,
    help="Send no worker heartbeat events (Celery apps; celeriac apps send none).",
)
@click.option("--print-steps", is_flag=True, help="Print the resolved bootsteps and exit.")
@unsupported_options
@click.pass_context
def worker(
    ctx: click.Context,
    app_spec: str | None,
    broker: str | None,
    result_backend: str | None,
    queues: str | None,
    exclude_queues: str | None,
    concurrency: int | None,
    pool: str | None,
    prefetch_multiplier: int | None,
    hostname: str | None,
    loglevel: str,
    logfile: str | None,
    max_tasks_per_child: int | None,
    max_memory_per_child: int | None,
    time_limit: float | None,
    soft_time_limit: float | None,
    optimization: str,
    autoscale: str | None,
    start_method: str | None,
    task_events: bool | None,
    heartbeat_interval: float | None,
    pidfile: str | None,
    without_gossip: bool,
    without_mingle: bool,
    without_heartbeat: bool,
    print_steps: bool,
) -> None:
    """Start a worker: ``celeriac worker -A proj`` or ``celeriac -A proj worker``."""
    from celeriac.cli.loader import find_app
    from celeriac.compat.celery import CeleryHost
    from celeriac.log import redirect_celery_stdouts, setup_celery_logging, setup_logging

    parent: dict[str, Any] = ctx.obj or {}
    app_spec = app_spec or parent.get("app")
    if not app_spec:
        raise click.UsageError("give the app with -A/--app (e.g. -A proj)")
    try:
        setup_logging(loglevel, logfile)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="-l") from None
    try:
        app = find_app(app_spec)
    except CeleriacError as exc:
        raise click.ClickException(str(exc)) from None
    broker = broker or parent.get("broker")
    result_backend = result_backend or parent.get("result_backend")
    app.override(broker_url=broker, result_backend=result_backend)
    pool = pool_name(pool or app.conf.worker_pool)
    try:
        consume = app.worker_queues(_names(queues), _names(exclude_queues))
    except CeleriacError as exc:
        raise click.BadParameter(str(exc), param_hint="-Q/-X") from None
    monitoring: dict[str, Any] = {}
    if isinstance(app, CeleryHost):
        monitoring = {
            "task_events": task_events,
            "heartbeat": not without_heartbeat,
            "heartbeat_interval": heartbeat_interval,
        }
    elif task_events or heartbeat_interval is not None:
        flag = "-E/--task-events" if task_events else "--heartbeat-interval"
        raise click.UsageError(
            f"{flag} is not supported by celeriac worker for celeriac apps yet "
            "(it is for Celery apps)"
        )
    try:
        app.connection()  # a broker URL no transport takes fails now, not after "ready"
        controller = app.Worker(
            **monitoring,
            hostname=hostname,
            pool=pool,
            concurrency=concurrency,
            queues=consume,
            prefetch_multiplier=prefetch_multiplier,
            max_tasks_per_child=max_tasks_per_child,
            max_memory_per_child=max_memory_per_child,
            time_limit=time_limit,
            soft_time_limit=soft_time_limit,
            fair=optimization == "fair",
            autoscale=_autoscale(autoscale),
            start_method=start_method,
        )
    except CeleriacError as exc:
        raise click.ClickException(str(exc)) from None
    if print_steps:
        click.echo(controller.blueprint.graph_text())
        click.echo(controller.consumer.blueprint.graph_text())
        return
    celery_app = app.celery_app if isinstance(app, CeleryHost) else None
    if celery_app is not None:
        # where celery worker does it: after the task modules and worker_init
        setup_celery_logging(celery_app, loglevel, logfile, controller.hostname)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if signum == signal.SIGQUIT or controller.consumer.should_stop:
            logger.warning("worker: cold shutdown (%s)", name)
            controller.terminate()
        else:
            logger.warning("worker: warm shutdown (%s); again for a cold shutdown", name)
            controller.stop()

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        signal.signal(signum, on_signal)
    logger.warning(
        "%s ready: %s, pool %s, queues %s",
        controller.hostname,
        mask_url(app.broker_url),
        pool,
        ",".join(controller.queues),
    )
    if celery_app is not None:
        redirect_celery_stdouts(celery_app)
    with pid_file(pidfile):
        try:
            controller.start()
        except CeleriacError as exc:
            raise click.ClickException(str(exc)) from None


def _names(value: str | None) -> list[str]:
    return [name.strip() for name in (value or "").split(",") if name.strip()]


def _autoscale(value: str | None) -> tuple[int, int] | None:
    if not value:
        return None
    try:
        parts = [int(x) for x in value.split(",")]
    except ValueError:
        raise click.BadParameter(f"want MAX,MIN, got {value!r}", param_hint="--autoscale") from None
    high = parts[0]
    low = parts[1] if len(parts) > 1 else 0
    if high < 1 or low < 0 or low > high:
        raise click.BadParameter(f"want MAX >= MIN >= 0, got {value!r}", param_hint="--autoscale")
    return high, low
