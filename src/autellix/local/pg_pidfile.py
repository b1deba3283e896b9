"""Reading a Postgres data directory's ``postmaster.pid``: is a live server running on it?

Both the Postgres server (adopt a live server, remove stale lock files) and the temp-dir sweep
(never remove a directory a server still runs in) ask this.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["is_postmaster_of", "read_pidfile"]


def read_pidfile(pgdata: Path) -> list[str] | None:
    """The lines of ``pgdata/postmaster.pid``, None when there is none (or it is unreadable)."""
    try:
        return (pgdata / "postmaster.pid").read_text().splitlines()
    except (FileNotFoundError, PermissionError):
        return None


def is_postmaster_of(pid: int, pgdata: Path) -> bool:
    """True if ``pid`` is a live postgres whose data directory is ``pgdata``.

    The postmaster chdirs into its data directory, so its cwd identifies it even if the pid
    was reused (common in containers, where pids restart from 1).
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    proc = Path(f"/proc/{pid}")
    if not proc.exists():  # not Linux: trust the pid
        return True
    try:
        if "postgres" not in (proc / "comm").read_text():
            return False
        return Path(os.readlink(proc / "cwd")).resolve() == pgdata.resolve()
    except OSError:
        cmdline = (proc / "cmdline").read_bytes() if (proc / "cmdline").exists() else b""
        return str(pgdata).encode() in cmdline
