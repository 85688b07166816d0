"""CPU and memory accounting of the processes in a benchmark (psutil): the broker, found by
its listening port, the worker's process tree, and the client."""

from __future__ import annotations

import ipaddress
import os
import socket
import time
from dataclasses import dataclass

import psutil  # type: ignore[import-untyped]

try:
    import resource
except ImportError:  # not on Windows: psutil's times there
    resource = None  # type: ignore[assignment]

__all__ = [
    "CpuSplit",
    "PhaseMeter",
    "ProcessMeter",
    "RssPeak",
    "is_local_host",
    "listening_pid",
]


def is_local_host(host: str) -> bool:
    """True when ``host`` names this machine (loopback, or one of its own addresses)."""
    if host in ("localhost", "", socket.gethostname()):
        return True
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    own = {
        str(addr.address).split("%", 1)[0]
        for addrs in psutil.net_if_addrs().values()
        for addr in addrs
        if addr.family in (socket.AF_INET, socket.AF_INET6)
    }
    for address in (str(a) for a in addresses):
        try:
            if ipaddress.ip_address(address.split("%", 1)[0]).is_loopback:
                return True
        except ValueError:
            continue
        if address in own:
            return True
    return False


def listening_pid(port: int) -> int | None:
    """The process listening on TCP ``port`` here, or ``None`` when none is visible (another
    user's processes are hidden without the rights to see them)."""
    try:
        connections = psutil.net_connections(kind="tcp")
    except (psutil.AccessDenied, OSError):
        return None
    for conn in connections:
        listening = conn.status == psutil.CONN_LISTEN and conn.laddr
        if listening and conn.laddr.port == port and conn.pid:
            return int(conn.pid)
    return None


def _tree(root: psutil.Process) -> list[psutil.Process]:
    try:
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return [root]


class ProcessMeter:
    """CPU seconds a process used between :meth:`start` and :meth:`stop`.

    With ``tree`` the live descendants count too; a descendant that exits while measured
    counts once its parent has waited for it (the kernel adds it to the parent's children
    times), which is what happens to the worker's recycled prefork children.

    Args:
        pid: the process (``None``: this one).
        tree: count its descendants as well.
    """

    def __init__(self, pid: int | None = None, tree: bool = False) -> None:
        self.process = psutil.Process(pid)
        self.tree = tree
        self.own = (pid is None or pid == os.getpid()) and resource is not None
        self._start: dict[int, float] = {}
        self._reaped_start = 0.0
        self._wall = 0.0

    def _times(self) -> tuple[dict[int, float], float]:
        if self.own and not self.tree:
            # this process: clock_gettime and getrusage are finer than /proc's 10 ms ticks
            children = resource.getrusage(resource.RUSAGE_CHILDREN)
            return {self.process.pid: time.process_time()}, children.ru_utime + children.ru_stime
        procs = _tree(self.process) if self.tree else [self.process]
        used: dict[int, float] = {}
        reaped = 0.0
        for proc in procs:
            try:
                t = proc.cpu_times()
            except psutil.Error:
                continue
            used[proc.pid] = t.user + t.system
            if proc.pid == self.process.pid:
                reaped = t.children_user + t.children_system
        return used, reaped

    def start(self) -> None:
        self._start, self._reaped_start = self._times()
        self._wall = time.perf_counter()

    def stop(self) -> tuple[float, float]:
        """Return (CPU seconds, wall seconds) since :meth:`start`."""
        used, reaped = self._times()
        wall = time.perf_counter() - self._wall
        seconds = reaped - self._reaped_start
        for pid, value in used.items():
            seconds += value - self._start.get(pid, 0.0)
        return max(seconds, 0.0), wall


class RssPeak:
    """The largest resident memory of a process tree seen by :meth:`sample`."""

    def __init__(self, pid: int | None = None) -> None:
        self.process = psutil.Process(pid if pid is not None else os.getpid())
        self.peak = 0

    def sample(self) -> int:
        total = 0
        for proc in _tree(self.process):
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                continue
        self.peak = max(self.peak, total)
        return total


@dataclass
class CpuSplit:
    """CPU seconds of one phase per party; ``None`` where it could not be measured."""

    wall_s: float = 0.0
    broker_s: float | None = None
    worker_s: float | None = None
    client_s: float | None = None

    def percent(self, seconds: float | None) -> float | None:
        """``seconds`` as a percentage of one core over the phase."""
        if seconds is None or not self.wall_s:
            return None
        return 100.0 * seconds / self.wall_s


class PhaseMeter:
    """The broker's, the worker's and the client's CPU over one phase.

    Args:
        broker_pid: the broker process, ``None`` when it is not visible here.
        worker_pid: the worker process (with its tree), ``None`` when it is this process.
    """

    def __init__(self, broker_pid: int | None, worker_pid: int | None) -> None:
        self.meters: dict[str, ProcessMeter] = {"client": ProcessMeter()}
        for name, pid in (("broker", broker_pid), ("worker", worker_pid)):
            if pid is not None:
                try:
                    self.meters[name] = ProcessMeter(pid, tree=True)
                except psutil.Error:
                    continue

    def start(self) -> None:
        for meter in self.meters.values():
            meter.start()

    def stop(self) -> CpuSplit:
        split = CpuSplit()
        for name, meter in self.meters.items():
            seconds, wall = meter.stop()
            split.wall_s = wall
            setattr(split, f"{name}_s", seconds)
        return split
