"""One run on the embedded broker (``memory://``): a worker process cannot reach a broker
that lives in this process, so the worker runs here, in a thread (``start_worker``)."""

from __future__ import annotations

import time

from celeriac.bench.broker import BrokerInfo
from celeriac.bench.clients import BenchClient
from celeriac.bench.config import BenchOptions
from celeriac.bench.cpu import PhaseMeter, RssPeak
from celeriac.bench.phases import Report, publish, round_trips
from celeriac.bench.results import RunResult

__all__ = ["EMBEDDED_POOLS", "run_embedded"]

#: prefork children would not see this process's broker and result store
EMBEDDED_POOLS = ("solo", "threads")


def run_embedded(
    opts: BenchOptions, broker: BrokerInfo, report: Report, result: RunResult
) -> RunResult:
    """Run the phases with the worker in this process, filling ``result`` as they finish.

    The worker's CPU is not separable from the client's here: it is counted as the client's.
    """
    from celeriac.testing import start_worker

    report = result.track(report)
    tasks = opts.tasks
    client = BenchClient("celeriac", opts)
    rss = RssPeak()
    try:
        result.phase = "publish"
        client.connect()
        meter = PhaseMeter(None, None)
        meter.start()
        result.publish_seconds = publish(client, tasks, report)
        result.cpu["publish"] = meter.stop()

        result.phase = "drain"
        report("drain", 0, tasks)
        launched = time.perf_counter()
        with start_worker(
            client.app,
            pool=opts.pool,
            concurrency=opts.workers,
            queues=[opts.queue],
            prefetch_multiplier=opts.prefetch_multiplier,
            fair=opts.fair,
        ) as worker:
            state = worker.state
            meter = PhaseMeter(None, None)
            meter.start()
            started = time.perf_counter()
            result.startup_seconds = started - launched
            while state.processed < tasks:
                time.sleep(0.005)
                report("drain", state.processed, tasks)
            result.drain_seconds = time.perf_counter() - started
            result.cpu["drain"] = meter.stop()
            rss.sample()
            report("drain", tasks, tasks)
            if opts.latency:
                result.phase = "latency"
                meter.start()
                round_trips(client, opts.latency, report, result.latency_samples, timeout=10)
                result.cpu["latency"] = meter.stop()
                rss.sample()
        result.worker_peak_rss_bytes = rss.peak
        result.phase = "done"
    finally:
        client.close()
    return result
