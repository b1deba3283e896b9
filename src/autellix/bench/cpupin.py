"""Keep a CPU box's model core for the model: during a benchmark run every process of the run
except vLLM's model worker runs on the other cores (`--pin-model-core`).

Why: vLLM on CPU binds its model worker to one core and reserves the rest for everything else,
but "everything else" (vLLM's engine-core process, the serving front end, and for Autellix the
control plane: NATS, Postgres, frontend, scheduler, engine service) is not bound, so the kernel
runs it on the model's core too and each time slice it takes there stretches a model step.
Measured on this 2-core machine (`bench/vllm/README.md`): the same work took ~6% longer per
engine step under Autellix than under plain vLLM, for that reason alone. On a GPU the model has
its own device; this makes the CPU core behave like one, for plain vLLM and Autellix alike.

Only this process's descendants are moved (an external NATS or Postgres is not ours to move),
every thread of each, and this process's own threads are put back afterwards, so the next run's
vLLM worker can still bind to its core (a child inherits its parent's mask).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

WORKER_NAMES = ("VLLM::Worker",)  # vLLM names its model worker process so (comm)


def _tasks(pid: int) -> list[int]:
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return []


def _affinity_of(pid: int) -> set[int]:
    """Union of the CPU masks of all threads of `pid` (OpenMP threads are bound one by one)."""
    cpus: set[int] = set()
    for tid in _tasks(pid):
        try:
            cpus |= os.sched_getaffinity(tid)
        except OSError:
            continue
    return cpus


def _set_all(pid: int, cpus: set[int]) -> int:
    """Move every thread of `pid` to `cpus`; how many moved."""
    n = 0
    for tid in _tasks(pid):
        try:
            os.sched_setaffinity(tid, cpus)
            n += 1
        except OSError:
            continue
    return n


@dataclass
class ModelCorePin:
    """Apply after the run's engine started (its worker exists), `restore` after the run."""

    all_cpus: set[int] = field(default_factory=lambda: set(os.sched_getaffinity(0)))
    model_cpus: set[int] = field(default_factory=set)
    moved_tasks: int = 0
    _own: dict[int, set[int]] = field(default_factory=dict)

    def apply(self) -> dict[str, Any]:
        """Find the model workers among our descendants and move everything else off their
        cores. Does nothing (and says why) when there is no worker or no other core."""
        import psutil

        me = psutil.Process()
        family = me.children(recursive=True)
        workers = model_workers(family)
        self.model_cpus = set().union(*(_affinity_of(p.pid) for p in workers)) if workers else set()
        others = self.all_cpus - self.model_cpus
        if not workers or not others:
            return self.summary("no model worker found" if not workers else "no other core")
        for tid in _tasks(me.pid):
            try:
                self._own[tid] = os.sched_getaffinity(tid)
            except OSError:
                continue
        self.moved_tasks = _set_all(me.pid, others)
        for p in family:
            if p not in workers:
                self.moved_tasks += _set_all(p.pid, others)
        return self.summary()

    def restore(self) -> None:
        """Put this process's own threads back on their cores (children are gone by now)."""
        for tid, cpus in self._own.items():
            try:
                os.sched_setaffinity(tid, cpus)
            except OSError:
                continue
        self._own.clear()

    def summary(self, skipped: str | None = None) -> dict[str, Any]:
        return {
            "model_cpus": sorted(self.model_cpus),
            "other_cpus": sorted(self.all_cpus - self.model_cpus),
            "moved_threads": self.moved_tasks,
            **({"skipped": skipped} if skipped else {}),
        }


def model_workers(processes: list[Any]) -> list[Any]:
    """The vLLM model workers among `processes` (psutil processes; ended ones are skipped)."""
    return [p for p in processes if _name(p) in WORKER_NAMES]


def _name(p: Any) -> str:
    try:
        return str(p.name())
    except Exception:  # psutil.Error: the process ended
        return ""
