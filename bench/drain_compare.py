"""Drain-rate grid, celeriac worker vs celery worker, same broker, same flags, same run.

``python bench/drain_compare.py [-n 50000] [--pools prefork:2,threads:4,solo:1]
[--prefetch 4,128] [--json FILE]``

For each (pool, concurrency, prefetch multiplier) the two workers drain the same number of
pre-published no-op tasks (ignore_result) from RabbitMQ, one after the other, alternating
which goes first. Numbers are tasks per second from first delivery to the last task.
"""

from __future__ import annotations

import argparse
import json
import os
import platform

from celeriac import Celery
from celeriac.bench.drain import DrainResult, drain_once


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=50_000)
    parser.add_argument("--pools", default="prefork:2,threads:4,solo:1")
    parser.add_argument("--prefetch", default="4,128")
    parser.add_argument("--workers", default="celeriac,celery")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    app = Celery(
        "drain-compare", broker="amqp://guest:guest@127.0.0.1:5672//", set_as_current=False
    )
    rows: list[dict[str, object]] = []
    kinds = args.workers.split(",")
    try:
        for i, spec in enumerate(args.pools.split(",")):
            pool, _, conc = spec.partition(":")
            for prefetch in (int(p) for p in args.prefetch.split(",")):
                order = kinds if i % 2 == 0 else list(reversed(kinds))
                results: dict[str, DrainResult] = {}
                for kind in order:
                    results[kind] = drain_once(app, kind, pool, int(conc or 1), prefetch, args.n)
                line = f"{pool:8s} -c {conc:2s} prefetch x{prefetch:<4d}"
                for kind in kinds:
                    line += f"  {kind} {results[kind].rate:10,.0f}/s"
                if "celeriac" in results and "celery" in results:
                    ratio = results["celeriac"].rate / results["celery"].rate
                    line += f"  ratio {ratio:5.1f}x"
                print(line, flush=True)
                rows.append(
                    {
                        "pool": pool,
                        "concurrency": int(conc or 1),
                        "prefetch_multiplier": prefetch,
                        **{k: round(v.rate) for k, v in results.items()},
                    }
                )
    finally:
        app.close()
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(
                {
                    "tasks": args.n,
                    "python": platform.python_version(),
                    "cores": os.cpu_count(),
                    "rows": rows,
                },
                fh,
                indent=2,
            )


if __name__ == "__main__":
    main()
