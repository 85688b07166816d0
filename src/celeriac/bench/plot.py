"""``--plot FILE.png``: drain rate against prefetch per pool, and the latency CDF when round
trips were measured (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections import defaultdict

from celeriac.bench.results import RunResult

__all__ = ["plot"]


def _series_name(run: RunResult, several_workers: bool) -> str:
    cfg = run.config
    name = f"{cfg['pool']} -c {cfg['concurrency']}"
    return f"{run.worker} {name}" if several_workers else name


def plot(runs: list[RunResult], path: str) -> None:
    """Draw the runs that finished their drain into ``path``.

    Raises:
        RuntimeError: matplotlib is not installed (``pip install 'celeriac[bench]'``).
    """
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError(
            "--plot needs matplotlib: pip install 'celeriac[bench]' or matplotlib"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drained = [r for r in runs if r.drain_rate is not None]
    with_latency = [r for r in runs if r.latency_samples]
    several = len({r.worker for r in runs}) > 1
    columns = 2 if with_latency else 1
    fig, axes = plt.subplots(1, columns, figsize=(6.5 * columns, 4.5), squeeze=False)
    ax = axes[0][0]
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for run in drained:
        series[_series_name(run, several)].append(
            (int(run.config["prefetch_multiplier"]), run.drain_rate or 0.0)
        )
    names = sorted({_series_name(r, several) for r in runs})
    colors = {name: f"C{i % 10}" for i, name in enumerate(names)}
    for name, points in sorted(series.items()):
        points.sort()
        xs, ys = [p for p, _ in points], [v for _, v in points]
        ax.plot(xs, ys, marker="o", label=name, color=colors[name])
    prefetches = sorted({p for points in series.values() for p, _ in points})
    if prefetches and min(prefetches) > 0 and max(prefetches) / min(prefetches) >= 8:
        ax.set_xscale("log", base=2)
    ax.set_xticks(prefetches, [str(p) for p in prefetches])
    ax.set_xlabel("prefetch multiplier")
    ax.set_ylabel("drain rate (tasks/s)")
    ax.set_ylim(bottom=0)
    ax.set_title("drain rate")
    ax.grid(True, alpha=0.3)
    if series:
        ax.legend(fontsize="small")
    if with_latency:
        ax = axes[0][1]
        # a pool's colour as on the left, one line style per prefetch multiplier
        styles = ["-", "--", ":", "-."]
        multipliers = sorted({int(r.config["prefetch_multiplier"]) for r in with_latency})
        for run in with_latency:
            ordered = sorted(run.latency_samples)
            n = len(ordered)
            label = f"{run.worker} {run.label}" if several else run.label
            style = styles[multipliers.index(int(run.config["prefetch_multiplier"])) % 4]
            color = colors[_series_name(run, several)]
            fractions = [(i + 1) / n for i in range(n)]
            ax.plot(ordered, fractions, label=label, color=color, linestyle=style)
        ax.set_xscale("log")
        ax.set_xlabel("round trip (ms)")
        ax.set_ylabel("fraction of round trips")
        ax.set_title("latency CDF (delay().get())")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="x-small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
