"""Resident memory of each service over time, read from /proc (Linux).

A service is its process and every descendant (Postgres is a postmaster and its backends; a
vLLM engine has worker processes), so its memory is a sum over that tree. Summing plain RSS
would count a shared page once per process that touched it: Postgres' shared buffers then
"grow" by hundreds of MiB as backends touch more of them, with no memory added. So each process
counts its PSS (proportional set size: a shared page split among its sharers, from
`/proc/<pid>/smaps_rollup`), which for a single process is its RSS; VmRSS where smaps_rollup
cannot be read. Sampled by pid at each tick, so a restarted part is followed under its new pid.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

__all__ = ["tree_rss_mib"]


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def _field_kib(path: Path, name: str) -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in path.read_text().splitlines():
            if line.startswith(name):
                return int(line.split()[1])
    return None


def _resident_kib(pid: int) -> int:
    pss = _field_kib(Path(f"/proc/{pid}/smaps_rollup"), "Pss:")
    if pss is not None:
        return pss
    return _field_kib(Path(f"/proc/{pid}/status"), "VmRSS:") or 0


def tree_rss_mib(pids: dict[str, int]) -> dict[str, float]:
    """{service: MiB resident in its process tree (PSS summed)} for each named root pid."""
    kids = _children()
    out: dict[str, float] = {}
    for name, root in pids.items():
        total, todo = 0, [root]
        while todo:
            pid = todo.pop()
            total += _resident_kib(pid)
            todo.extend(kids.get(pid, ()))
        out[name] = round(total / 1024, 1)
    return out
