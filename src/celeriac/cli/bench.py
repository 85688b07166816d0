"""``celeriac bench``: measure publish, drain and round-trip rates, with live progress bars."""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Any

import click

from celeriac.bench.config import POOLS

__all__ = ["bench"]

_URL_VARIABLES = (
    "CELERIAC_BROKER_URL",
    "CELERY_BROKER_URL",
    "CELERIAC_RESULT_BACKEND",
    "CELERY_RESULT_BACKEND",
)


@click.command()
@click.argument("axes", nargs=-1, metavar="[AXIS=V1,V2 ...]")
@click.option(
    "-b",
    "--broker",
    default=None,
    help="Broker URL (default: broker_url, else a local RabbitMQ, else memory://).",
)
@click.option(
    "--result-backend", default=None, help="Result backend for round trips (default: rpc://)."
)
@click.option(
    "-n",
    "--tasks",
    type=click.IntRange(1),
    default=100_000,
    show_default=True,
    help="Tasks to publish and drain.",
)
@click.option(
    "--body-size",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Bytes of payload per task.",
)
@click.option(
    "--task",
    "task_spec",
    default="noop",
    show_default=True,
    help="What each task does: noop, echo, sleep:MS or cpu:US.",
)
@click.option(
    "-P",
    "--pool",
    type=click.Choice(POOLS),
    default="prefork",
    show_default=True,
    help="The worker's pool.",
)
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(1),
    default=None,
    help="The worker's concurrency (default: CPU count; solo: 1).",
)
@click.option("--prefetch-multiplier", type=click.IntRange(0), default=4, show_default=True)
@click.option(
    "--acks-late", is_flag=True, help="Tasks acknowledged after they ran (task_acks_late)."
)
@click.option(
    "-O",
    "optimization",
    type=click.Choice(["default", "fair"]),
    default="default",
    help="fair: work only to idle children.",
)
@click.option("--max-tasks-per-child", type=click.IntRange(1), default=None)
@click.option(
    "--latency",
    type=click.IntRange(0),
    default=1_000,
    show_default=True,
    help="Sequential delay().get() round trips.",
)
@click.option(
    "--publishers",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="Parallel publishing processes.",
)
@click.option("--confirm", is_flag=True, help="Publisher confirms on the publishing connections.")
@click.option(
    "--queue",
    default=None,
    help="Queue name (default: a new one per run); it is deleted afterwards.",
)
@click.option(
    "--sweep",
    is_flag=True,
    help="Run every combination of the AXES: prefetch=..., pool=..., concurrency=....",
)
@click.option(
    "--plot",
    "plot_file",
    default=None,
    metavar="FILE.png",
    help="Draw drain rate against prefetch (and the latency CDF).",
)
@click.option(
    "--against",
    type=click.Choice(["celery"]),
    default=None,
    help="Run the same workload with Celery's client and a celery worker too.",
)
@click.option(
    "--repeat",
    type=click.IntRange(1),
    default=None,
    help="Runs per worker, medians reported (default: 3 with --against, else 1).",
)
@click.option(
    "--raw",
    is_flag=True,
    help="Also publish and consume the run's messages with the bare AMQP client.",
)
@click.option(
    "-l", "--loglevel", default="ERROR", show_default=True, help="Level of celeriac's own logs."
)
@click.option(
    "--json", "json_file", default=None, metavar="FILE", help="Write every number to this file."
)
@click.pass_context
def bench(ctx: click.Context, /, axes: tuple[str, ...], **options: Any) -> None:
    """Measure a worker: publish rate, drain rate and round-trip latency.

    The worker runs as its own process, started as a user starts it (`celeriac worker`);
    on the embedded memory:// broker it runs in this process.
    """
    from rich.console import Console

    from celeriac.bench.broker import choose_broker, describe
    from celeriac.bench.command import execute
    from celeriac.log import setup_logging

    try:
        setup_logging(options.pop("loglevel"))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="-l") from None

    plan, given = _plan(ctx, axes, options)
    console = Console()
    url, note = choose_broker(given)
    if note:
        plan.notes.insert(0, note)
    plan.opts = plan.opts.with_(broker=url)
    _check(plan)
    for name in _URL_VARIABLES:
        # the bench apps get their URLs explicitly; these would win over them
        os.environ.pop(name, None)
    try:
        broker = describe(url)
    except Exception as exc:
        from celeriac.urls import mask_url

        raise click.ClickException(f"cannot reach the broker {mask_url(url)}: {exc}") from None
    try:
        status = execute(plan, broker, console)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(status)


def _plan(ctx: click.Context, axes: tuple[str, ...], o: dict[str, Any]) -> tuple[Any, str | None]:
    """The options as a :class:`~celeriac.bench.command.Plan`, and the broker asked for."""
    from celeriac.bench.command import Plan
    from celeriac.bench.config import BenchOptions, new_queue_name, parse_sweep, parse_task

    parent: dict[str, Any] = ctx.obj or {}
    broker = o["broker"] or parent.get("broker")
    backend = o["result_backend"] or parent.get("result_backend")
    if not (broker and backend):
        conf = _configured(parent.get("app"))
        broker = broker or conf.get("broker_url")
        backend = backend or conf.get("result_backend")
    try:
        task = parse_task(o["task_spec"])
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--task") from None
    if axes and not o["sweep"]:
        raise click.UsageError(f"{' '.join(axes)!r}: sweep axes need --sweep")
    try:
        sweep = parse_sweep(axes) if o["sweep"] else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--sweep") from None
    if o["sweep"] and not sweep:
        raise click.UsageError("--sweep needs axes, e.g. --sweep prefetch=1,16 pool=solo,threads")
    opts = BenchOptions(
        broker=broker or "",
        result_backend=backend,
        tasks=o["tasks"],
        body_size=o["body_size"],
        task=task,
        pool=o["pool"],
        concurrency=o["concurrency"],
        prefetch_multiplier=o["prefetch_multiplier"],
        acks_late=o["acks_late"],
        fair=o["optimization"] == "fair",
        max_tasks_per_child=o["max_tasks_per_child"],
        latency=o["latency"],
        publishers=o["publishers"],
        queue=o["queue"] or new_queue_name(),
        confirm=o["confirm"],
    )
    repeat = o["repeat"] or (3 if o["against"] else 1)
    plan = Plan(opts, sweep, o["against"], repeat, o["raw"], o["json_file"], o["plot_file"])
    return plan, broker


def _configured(app_spec: str | None) -> dict[str, Any]:
    """``broker_url`` and ``result_backend`` of ``-A``'s app, or of the environment."""
    from celeriac.config import Settings

    conf: Any = Settings()
    if app_spec:
        from celeriac.cli.loader import find_app
        from celeriac.errors import CeleriacError

        try:
            conf = find_app(app_spec).conf
        except CeleriacError as exc:
            raise click.ClickException(str(exc)) from None
    return {"broker_url": conf.broker_url, "result_backend": conf.result_backend}


def _check(plan: Any) -> None:
    """Refuse combinations that cannot run; adjust (and say so) those that can."""
    from celeriac.bench.embedded import EMBEDDED_POOLS

    opts = plan.opts
    if plan.against and importlib.util.find_spec("celery") is None:
        raise click.UsageError(
            "--against celery needs the celery package: pip install celery "
            "(or pip install 'celeriac[bench]')"
        )
    if plan.sweep and (plan.against or plan.repeat > 1):
        flag = "--against" if plan.against else "--repeat"
        raise click.UsageError(f"--sweep and {flag} cannot be combined: run one at a time")
    if opts.embedded:
        plan.notes.append(
            "the worker runs in this process: its CPU is counted as the client's, its memory "
            "is this process's"
        )
        if plan.against or plan.raw:
            flag = "--against" if plan.against else "--raw"
            raise click.UsageError(f"{flag} needs a real broker, not {opts.broker}")
        if opts.pool not in EMBEDDED_POOLS:
            plan.notes.append(f"-P {opts.pool} cannot run on the embedded broker: -P solo instead")
            plan.opts = opts = opts.with_(pool="solo")
        if plan.sweep and "pool" in plan.sweep:
            pools = [p for p in plan.sweep["pool"] if p in EMBEDDED_POOLS]
            if len(pools) < len(plan.sweep["pool"]):
                plan.notes.append("prefork is left out of the sweep on the embedded broker")
            plan.sweep["pool"] = pools or ["solo"]
        if opts.publishers > 1:
            plan.notes.append("one publisher on the embedded broker (it lives in this process)")
            plan.opts = opts.with_(publishers=1)
    else:
        _check_queue_is_new(plan.opts)


def _check_queue_is_new(opts: Any) -> None:
    """The run deletes its queue afterwards: never one that held someone's messages."""
    from celeriac.errors import ChannelError
    from celeriac.transports.registry import transport_for_url

    transport = transport_for_url(opts.broker, heartbeat=0)
    try:
        transport.connect()
        transport.declare_queue(opts.queue, passive=True)
    except ChannelError:
        return  # no such queue: good
    except Exception as exc:
        from celeriac.urls import mask_url

        raise click.ClickException(
            f"cannot reach the broker {mask_url(opts.broker)}: {exc}"
        ) from None
    finally:
        transport.close()
    raise click.UsageError(
        f"queue {opts.queue!r} already exists; the bench deletes its queue afterwards, "
        "so give a new name"
    )
