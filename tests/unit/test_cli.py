"""The ``celeriac`` command, run as users run it (a subprocess)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).parent
CELERIAC = [sys.executable, "-m", "celeriac"]


def run(
    *args: str, env: dict[str, str] | None = None, cwd: Path = HERE / "cliproj", timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [*CELERIAC, *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=timeout
    )


def test_version_says_which_hot_path_runs() -> None:
    pure = run("--version", env={"CELERIAC_NO_EXTENSIONS": "1", "CELERIAC_REQUIRE_EXTENSIONS": ""})
    assert pure.returncode == 0, pure.stderr
    assert "speedups: pure" in pure.stdout
    if os.environ.get("CELERIAC_NO_EXTENSIONS") == "1":
        return  # this run checks the pure twin; the compiled run checks the other line
    compiled = run("--version", env={"CELERIAC_NO_EXTENSIONS": ""})
    assert compiled.returncode == 0, compiled.stderr
    assert "speedups: compiled" in compiled.stdout


def test_require_extensions_fails_loudly_when_missing() -> None:
    # hide the compiled modules, as on a machine where the build did not happen
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.startswith('celeriac._speedups.'):\n"
        "            raise ImportError('no compiled module here')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import celeriac._accel\n"
    )
    env = {**os.environ, "CELERIAC_REQUIRE_EXTENSIONS": "1", "CELERIAC_NO_EXTENSIONS": ""}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode != 0
    assert "CELERIAC_REQUIRE_EXTENSIONS=1" in proc.stderr
    assert "pip install ." in proc.stderr


@pytest.mark.parametrize("order", ["app-first", "worker-first"])
def test_print_steps_in_both_argument_orders(order: str) -> None:
    args = (
        ["-A", "proj", "worker", "--print-steps"]
        if order == "app-first"
        else ["worker", "-A", "proj", "--print-steps"]
    )
    proc = run(*args)
    assert proc.returncode == 0, proc.stderr
    for step in ("Timer", "Pool", "Consumer", "Connection", "Tasks"):
        assert step in proc.stdout


def test_worker_requires_an_app() -> None:
    proc = run("worker")
    assert proc.returncode != 0
    assert "-A" in proc.stderr


def test_unknown_app_module_is_a_clear_error() -> None:
    proc = run("worker", "-A", "does_not_exist_anywhere")
    assert proc.returncode != 0
    assert "cannot find the app module 'does_not_exist_anywhere'" in proc.stderr


def test_worker_runs_tasks_and_exits_zero_on_sigterm(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    env = {**os.environ, "CLIPROJ_TOUCH": str(marker)}
    proc = subprocess.Popen(
        [*CELERIAC, "worker", "-A", "proj:app", "-P", "solo", "-l", "info"],
        cwd=HERE / "cliproj",
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), "the worker did not run the queued task"
        assert marker.read_text() == str(proc.pid)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "warm shutdown" in err
