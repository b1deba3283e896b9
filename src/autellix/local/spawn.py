"""Start child processes that cannot outlive us, and tell whether a process group still runs.

Every child runs in **its own process group**, so a terminal Ctrl-C reaches only the supervisor,
which then stops the children in an orderly way. Each child also asks the kernel for
``PR_SET_PDEATHSIG`` (Linux), so it gets its stop signal the moment its parent dies; the
supervisor's watchdog (``autellix.local.watchdog``) covers the children that ignore it.

Caveat: Linux delivers the parent-death signal when the *thread* that forked the child exits, so
start children from a long-lived thread (the main thread, or the event loop's thread), never from
a short-lived worker such as ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

__all__ = ["group_alive", "pid_alive", "signal_group", "spawn"]

PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    """Resolve libc's prctl once in the parent: the child must not load libraries after fork."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    except OSError:
        return None
    prctl = libc.prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


_PRCTL = _load_prctl()


def _death_signal_preexec(sig: int) -> Callable[[], None]:
    """Build a preexec_fn that makes the child receive ``sig`` when its parent dies.

    The parent might die between fork and prctl; comparing getppid with the pid recorded before
    the fork closes that race (the child then signals itself).
    """
    parent = os.getpid()
    prctl = _PRCTL

    def preexec() -> None:
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), sig)

    return preexec


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    stdin: int | IO[Any] | None = subprocess.DEVNULL,
    stdout: int | IO[Any] | None = None,
    stderr: int | IO[Any] | None = None,
    new_group: bool = True,
    death_signal: int | None = signal.SIGTERM,
    user: str | None = None,
    group: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` as a child that cannot outlive us (see the module docstring).

    ``env`` is the *complete* environment (None: inherit ours). ``user``/``group`` switch
    identity (root only); the death signal is set after the switch, because Linux clears it on a
    credential change. Used by ``ProcessGroup`` and by the embedded NATS/Postgres servers.
    """
    kwargs: dict[str, Any] = {}
    if user is not None:
        kwargs["user"] = user
        kwargs["group"] = group or user
        kwargs["extra_groups"] = []
    return subprocess.Popen(
        list(argv),
        env=dict(env) if env is not None else None,
        cwd=str(cwd) if cwd is not None else None,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        start_new_session=new_group,
        preexec_fn=_death_signal_preexec(death_signal) if death_signal else None,
        close_fds=True,
        **kwargs,
    )


def group_alive(pgid: int) -> bool:
    """True while process group ``pgid`` has a member that is not a zombie.

    ``killpg(pgid, 0)`` alone also counts zombies, which never go away in containers whose PID 1
    does not reap, so on Linux we read /proc instead.
    """
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command: state ppid pgrp ...
        rest = stat[stat.rfind(")") + 2 :].split()
        if len(rest) >= 3 and int(rest[2]) == pgid and rest[0] not in ("Z", "X"):
            return True
    return False


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` exists (a process of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def signal_group(pgid: int, sig: int) -> None:
    """Send ``sig`` to group ``pgid``; a group that is already gone is not an error."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
