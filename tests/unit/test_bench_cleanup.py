"""The bench's clean-up: Ctrl-C held while a worker starts or the run is cleaned up."""

from __future__ import annotations

import os
import signal

import pytest

from celeriac.bench.cleanup import deferred_sigint, delete_results


def test_ctrl_c_inside_the_block_is_raised_after_it() -> None:
    finished = []
    with pytest.raises(KeyboardInterrupt), deferred_sigint():
        os.kill(os.getpid(), signal.SIGINT)
        finished.append("the block ran to its end")
    assert finished == ["the block ran to its end"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_no_ctrl_c_no_interrupt() -> None:
    with deferred_sigint():
        pass
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_results_without_keys_need_no_deleting() -> None:
    assert delete_results("memory://", "rpc://", ["a", "b"]) == []
    assert delete_results("memory://", "memory://x", ["a"]) == []
    assert delete_results("memory://", "redis://127.0.0.1:1/0", []) == []
