"""Throw-away data directories for ephemeral servers, and the sweep of those a killed owner left.

An owner killed with SIGKILL cannot remove its own temp dir, so each one is marked with its owner's
pid and start time, and every new one first removes those whose owner process is gone (and where
no server still runs).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

from autellix.local.pg_pidfile import is_postmaster_of, read_pidfile
from autellix.local.spawn import pid_alive

__all__ = ["make_temp_dir"]

log = logging.getLogger(__name__)

_OWNER_FILE = ".autellix-owner"


def _proc_start_time(pid: int) -> str | None:
    """Start time of ``pid`` in clock ticks (tells a reused pid apart), None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2 :].split()[19]


def _owner_alive(path: Path) -> bool:
    """Whether the process that made ``path`` still runs (the same pid *and* start time)."""
    try:
        pid_text, _, started = (path / _OWNER_FILE).read_text().partition(" ")
        pid = int(pid_text)
    except (OSError, ValueError):
        return True  # not ours or being created: never touch it
    if not pid_alive(pid):
        return False
    now = _proc_start_time(pid)
    return not (started.strip() and now and started.strip() != now)


def _server_running_in(path: Path) -> bool:
    """Whether a Postgres (live postmaster.pid) or NATS (ports file of a live pid) runs there."""
    lines = read_pidfile(path / "pgdata")
    if lines and lines[0].strip().isdigit() and is_postmaster_of(int(lines[0]), path / "pgdata"):
        return True
    for ports in path.glob("*.ports"):
        m = re.search(r"_(\d+)\.ports$", ports.name)
        if m and pid_alive(int(m.group(1))):
            return True
    return False


def _sweep_stale_temp_dirs(prefix: str) -> None:
    for path in Path(tempfile.gettempdir()).glob(f"{prefix}*"):
        if (path / _OWNER_FILE).exists() and not _owner_alive(path):
            if not _server_running_in(path):
                log.info("removing %s left by a killed process", path)
                shutil.rmtree(path, ignore_errors=True)


def make_temp_dir(prefix: str) -> Path:
    """A fresh temp dir marked with our pid, after sweeping stale ones of the same kind."""
    with contextlib.suppress(OSError):
        _sweep_stale_temp_dirs(prefix)
    path = Path(tempfile.mkdtemp(prefix=prefix))
    (path / _OWNER_FILE).write_text(f"{os.getpid()} {_proc_start_time(os.getpid()) or ''}")
    return path
