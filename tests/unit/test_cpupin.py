"""`ModelCorePin`: everything of a benchmark run but vLLM's model worker moves off the worker's
cores, and this process gets its own cores back afterwards. Real child processes, real masks."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from autellix.bench.cpupin import ModelCorePin, model_workers

pytestmark = pytest.mark.skipif(
    len(os.sched_getaffinity(0)) < 2, reason="needs at least 2 usable CPUs"
)

# a child that calls itself VLLM::Worker and binds to one core, like vLLM's model worker
WORKER = """
import os, sys, time
open("/proc/self/comm", "w").write("VLLM::Worker")
os.sched_setaffinity(0, {int(sys.argv[1])})
print("ready", flush=True)
time.sleep(60)
"""
OTHER = "import time; print('ready', flush=True); time.sleep(60)"


def _spawn(code: str, *args: str) -> subprocess.Popen[str]:
    p = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    return p


def _no_other_workers() -> None:
    import psutil

    if model_workers(psutil.Process().children(recursive=True)):
        pytest.skip("a vLLM engine of another test is running in this session")


def test_moves_everything_but_the_worker_and_restores_itself() -> None:
    _no_other_workers()
    mine = os.sched_getaffinity(0)
    core = min(mine)
    worker, other = _spawn(WORKER, str(core)), _spawn(OTHER)
    pin = ModelCorePin()
    try:
        summary = pin.apply()
        assert summary["model_cpus"] == [core]
        assert summary["moved_threads"] >= 2
        assert os.sched_getaffinity(other.pid) == mine - {core}
        assert os.sched_getaffinity(0) == mine - {core}
        assert os.sched_getaffinity(worker.pid) == {core}
    finally:
        pin.restore()
        for p in (worker, other):
            p.kill()
            p.wait()
    assert os.sched_getaffinity(0) == mine


def test_without_a_worker_nothing_moves() -> None:
    _no_other_workers()
    other = _spawn(OTHER)
    before = os.sched_getaffinity(other.pid)
    try:
        pin = ModelCorePin()
        summary = pin.apply()
        time.sleep(0.05)
        assert summary["skipped"] == "no model worker found"
        assert os.sched_getaffinity(other.pid) == before
        pin.restore()
    finally:
        other.kill()
        other.wait()
