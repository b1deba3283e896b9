"""The vLLM backend's orphan watchdog: kills vLLM's processes once the engine service is gone.

vLLM's engine-core and worker processes outlive a SIGKILLed parent (measured: still running 20 s
later, holding their memory). `start_watchdog` starts this module as a small process of its own
that waits until its parent (the engine) is gone, then kills exactly the processes vLLM spawned
for it, each identified by pid *and* start time, so a recycled pid is never killed.

It runs as a script (``python -P <this file> PARENT PID:START_MS...``), not with ``-m``: importing
the package would import pydantic and the protocol for a process that only sleeps, so nothing is
imported until it acts (psutil, once the parent is gone).
"""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import subprocess

__all__ = ["main", "start_watchdog"]


def main(argv: list[str]) -> int:
    """``argv``: the parent's pid, then ``pid:start_ms`` of each process to kill after it."""
    parent = int(argv[0])
    while os.getppid() == parent:
        time.sleep(0.5)
    import psutil

    for arg in argv[1:]:
        pid, started = arg.split(":")
        try:
            p = psutil.Process(int(pid))
            if round(p.create_time() * 1000) == int(started):
                p.kill()
        except psutil.Error:
            pass
    return 0


def start_watchdog() -> subprocess.Popen[bytes] | None:
    """Start the orphan watchdog for this process's current descendants (vLLM's processes)."""
    import subprocess

    import psutil

    try:
        family = psutil.Process().children(recursive=True)
        args = [f"{p.pid}:{round(p.create_time() * 1000)}" for p in family]
    except psutil.Error:
        return None
    if not args:
        return None
    return subprocess.Popen(
        [sys.executable, "-P", os.path.abspath(__file__), str(os.getpid()), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
