"""One run on a real broker: publish, then drain with a worker process started as a user
starts it, then round trips to that worker; everything the run created is removed after."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time

from celeriac.bench.apps import make_celeriac_app
from celeriac.bench.broker import BrokerInfo
from celeriac.bench.cleanup import deferred_sigint, delete_queues, delete_results
from celeriac.bench.clients import BenchClient
from celeriac.bench.config import BenchOptions
from celeriac.bench.cpu import PhaseMeter, RssPeak
from celeriac.bench.drain import WorkerProcess, ready_count, time_drain, worker_command
from celeriac.bench.phases import Report, publish, publish_parallel, round_trips
from celeriac.bench.results import RunResult

__all__ = ["new_result", "run_once", "worker_env"]


def new_result(opts: BenchOptions) -> RunResult:
    return RunResult(opts.worker, opts.as_dict(), label=opts.label(), tasks=opts.tasks)


def worker_env(opts: BenchOptions) -> dict[str, str]:
    """The environment the bench apps read in the worker process."""
    env = {
        **os.environ,
        "CELERIAC_BENCH_BROKER": opts.broker,
        "CELERIAC_BENCH_BACKEND": opts.backend,
        "CELERIAC_BENCH_QUEUE": opts.queue,
        "CELERIAC_BENCH_ACKS_LATE": "1" if opts.acks_late else "0",
    }
    for name in (
        "CELERIAC_BROKER_URL",
        "CELERY_BROKER_URL",
        "CELERIAC_RESULT_BACKEND",
        "CELERY_RESULT_BACKEND",
    ):
        env.pop(name, None)  # they would win over the bench app's URLs
    return env


def run_once(
    opts: BenchOptions, broker: BrokerInfo, report: Report, result: RunResult
) -> RunResult:
    """Run the phases, filling ``result`` as each one finishes.

    Raises:
        RuntimeError: the worker did not start, or stopped before the end of the queue.
        KeyboardInterrupt: passed on once the run's worker, queue and results are gone.
    """
    report = result.track(report)
    queue, tasks = opts.queue, opts.tasks
    scratch = tempfile.mkdtemp(prefix="celeriac-bench-")
    marker = os.path.join(scratch, "done")
    admin_app = make_celeriac_app(opts.broker, None, queue)
    admin = admin_app.connection(heartbeat=0)
    client: BenchClient | None = None
    worker: WorkerProcess | None = None
    try:
        result.phase = "publish"
        admin.connect()
        admin_app.declare_queue(admin, queue, set())
        client = BenchClient(opts.worker, opts)
        client.connect()
        meter = PhaseMeter(broker.pid, None)
        meter.start()
        if opts.publishers > 1:
            result.publish_seconds = publish_parallel(
                opts.worker, opts, tasks, opts.publishers, report
            )
        else:
            result.publish_seconds = publish(client, tasks, report)
        result.cpu["publish"] = meter.stop()
        client.mark(marker)
        deadline = time.monotonic() + 120
        while (queued := ready_count(admin, queue)) < tasks + 1:
            if time.monotonic() > deadline:  # the drain clock needs a full queue to start
                raise RuntimeError(
                    f"only {queued} of the {tasks + 1} messages published reached queue {queue}"
                )
            time.sleep(0.01)  # messages still on their way to the queue

        result.phase = "drain"
        command = worker_command(
            opts.worker,
            queue,
            opts.pool,
            opts.workers,
            opts.prefetch_multiplier,
            opts.extra_worker_flags(),
        )
        with deferred_sigint():  # no worker may be left running unknown to the clean-up
            worker = WorkerProcess(command, worker_env(opts))
        rss = RssPeak(worker.pid)
        meter = PhaseMeter(broker.pid, worker.pid)

        def tick(delivered: int) -> None:
            rss.sample()
            result.worker_peak_rss_bytes = rss.peak
            report("drain", min(delivered, tasks), tasks)

        report("drain", 0, tasks)
        result.drain_seconds, result.startup_seconds = time_drain(
            admin, worker, queue, tasks, marker, on_start=meter.start, on_tick=tick
        )
        result.cpu["drain"] = meter.stop()
        rss.sample()
        result.worker_peak_rss_bytes = rss.peak
        report("drain", tasks, tasks)

        if opts.latency:
            result.phase = "latency"
            meter = PhaseMeter(broker.pid, worker.pid)

            def progress(phase: str, done: int, total: int) -> None:
                rss.sample()
                report(phase, done, total)

            meter.start()
            round_trips(client, opts.latency, progress, result.latency_samples)
            result.cpu["latency"] = meter.stop()
            rss.sample()
            result.worker_peak_rss_bytes = rss.peak
        result.phase = "done"
    finally:
        with deferred_sigint():
            if worker is not None:
                worker.stop()
            queues = [queue]
            if client is not None:
                reply = client.reply_queue()
                client.close()
                if reply:
                    queues.append(reply)
            with contextlib.suppress(Exception):  # it may be mid-frame after Ctrl-C
                admin.close()
            admin_app.close()
            result.notes += delete_queues(opts.broker, queues, [queue])
            if result.latency_samples or result.phase == "latency":
                ids = [f"{queue}.rt.{i}" for i in range(len(result.latency_samples) + 1)]
                result.notes += delete_results(opts.broker, opts.backend, ids)
            shutil.rmtree(scratch, ignore_errors=True)
    return result
