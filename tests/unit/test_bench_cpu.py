"""Bench accounting: CPU per process tree, the process behind a listening port, peak RSS."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import psutil  # type: ignore[import-untyped]

from celeriac.bench.cpu import CpuSplit, ProcessMeter, RssPeak, is_local_host, listening_pid


def _spin_cpu(seconds: float) -> None:
    """Use ``seconds`` of CPU (however long that takes on a loaded machine)."""
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_meter_counts_this_process_busy_and_not_idle() -> None:
    meter = ProcessMeter()
    meter.start()
    _spin_cpu(0.2)
    busy, wall = meter.stop()
    meter.start()
    time.sleep(0.2)
    idle, _ = meter.stop()
    assert 0.2 <= busy < 0.25
    assert wall >= busy
    assert idle < 0.05


def test_tree_meter_counts_a_busy_child() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import time\nend=time.time()+5\nwhile time.time()<end: pass"]
    )
    try:
        time.sleep(0.1)
        tree = ProcessMeter(os.getpid(), tree=True)
        alone = ProcessMeter(os.getpid(), tree=False)
        busy = psutil.Process(child.pid)
        used = sum(busy.cpu_times()[:2])
        tree.start()
        alone.start()
        deadline = time.monotonic() + 10
        while sum(busy.cpu_times()[:2]) - used < 0.3 and time.monotonic() < deadline:
            time.sleep(0.02)
        with_child, _ = tree.stop()
        without, _ = alone.stop()
    finally:
        child.kill()
        child.wait()
    assert with_child >= 0.28  # the child's 0.3 s, give or take a 10 ms tick
    assert without < 0.1


def test_listening_pid_finds_this_process_by_port() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        assert listening_pid(port) == os.getpid()
    assert listening_pid(port) is None


def test_local_hosts() -> None:
    assert is_local_host("localhost")
    assert is_local_host("127.0.0.1")
    assert not is_local_host("192.0.2.10")  # TEST-NET-1: nobody's address


def test_rss_peak_keeps_the_largest_sample() -> None:
    peak = RssPeak()
    first = peak.sample()
    assert first > 10 * 2**20
    assert peak.peak >= first


def test_percent_of_a_core() -> None:
    split = CpuSplit(wall_s=2.0, broker_s=1.0, worker_s=None)
    assert split.percent(split.broker_s) == 50.0
    assert split.percent(split.worker_s) is None
