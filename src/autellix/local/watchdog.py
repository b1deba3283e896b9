"""The supervisor's watchdog: stops every child group once the supervisor is gone, even SIGKILLed.

The parent-death signal (``autellix.local.spawn``) stops only children that honour their stop
signal, and only on Linux. This small process covers the rest: it runs in its own session and
without a death signal, so it survives the supervisor; it notices the supervisor's death through
EOF on its stdin pipe, then signals every child group it was told about, waits each group's
grace period, and SIGKILLs the stubborn ones.

Protocol on stdin, one command a line (written by ``Watchdog``, read by ``main``):

* ``add PGID SIG GRACE``: watch group PGID; on the supervisor's death send it SIG, and SIGKILL
  after GRACE seconds;
* ``del PGID``: the supervisor stopped that group itself;
* ``exit``: the supervisor stopped everything; leave quietly.

EOF without ``exit`` means the supervisor died. Run as ``python -m autellix.local.watchdog``.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from autellix.local.spawn import group_alive, signal_group

__all__ = ["Watchdog", "main", "read_commands", "stop_groups"]

Groups = dict[int, tuple[int, float]]  # pgid -> (stop signal, grace seconds)

_POLL_S = 1.0  # how often groups that emptied on their own are forgotten


def _apply(line: bytes, groups: Groups) -> bool:
    """Apply one command line to ``groups``; False for ``exit``."""
    parts = line.decode().split()
    if not parts:
        return True
    if parts[0] == "add":
        groups[int(parts[1])] = (int(parts[2]), float(parts[3]))
    elif parts[0] == "del":
        groups.pop(int(parts[1]), None)
    elif parts[0] == "exit":
        return False
    return True


def read_commands(fd: int) -> Groups | None:
    """Follow the supervisor's commands on ``fd`` until it closes: the groups still registered at
    EOF (the supervisor died), or None after ``exit`` (it stopped everything itself)."""
    groups: Groups = {}
    buf = b""
    while True:
        ready, _, _ = select.select([fd], [], [], _POLL_S)
        if not ready:
            # Forget groups that emptied on their own, so a reused pgid is never signalled.
            for pgid in [p for p in groups if not group_alive(p)]:
                del groups[pgid]
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            return groups
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if not _apply(line, groups):
                return None


def stop_groups(groups: Groups) -> None:
    """Send each group its stop signal at once, then SIGKILL those alive after their grace."""
    for pgid, (sig, _) in groups.items():
        signal_group(pgid, sig)
    pending = dict(groups)
    start = time.monotonic()
    while pending:
        for pgid, (_, grace) in list(pending.items()):
            if not group_alive(pgid):
                del pending[pgid]
            elif time.monotonic() - start >= grace:
                signal_group(pgid, signal.SIGKILL)
                del pending[pgid]
        time.sleep(0.05)


def main() -> int:
    """The watchdog process: a Ctrl-C in the supervisor's terminal must not stop it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    groups = read_commands(sys.stdin.fileno())
    if groups is not None:
        stop_groups(groups)
    return 0


class Watchdog:
    """The supervisor's side: starts the watchdog process and registers groups with it.

    Writes are best effort: the watchdog may already be gone, and a supervisor must not fail
    because its safety net did.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        env = dict(os.environ)
        # The directory holding the autellix package, in case this process found it through a
        # sys.path entry of its own (a test runner's, say) that the child would not inherit.
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "autellix.local.watchdog"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
            close_fds=True,
        )

    @property
    def pid(self) -> int:
        return self._proc.pid

    def _send(self, line: str) -> None:
        with self._lock:
            stdin = self._proc.stdin
            if stdin is None or stdin.closed:
                return
            try:
                stdin.write(line.encode() + b"\n")
                stdin.flush()
            except (BrokenPipeError, OSError):
                pass

    def add(self, pgid: int, sig: int, grace: float) -> None:
        self._send(f"add {pgid} {int(sig)} {grace}")

    def remove(self, pgid: int) -> None:
        self._send(f"del {pgid}")

    def close(self) -> int:
        """Tell the watchdog we stopped everything ourselves and let it exit quietly; its exit
        code (0: it left without touching a group)."""
        self._send("exit")
        with self._lock:
            if self._proc.stdin is not None:
                with contextlib.suppress(OSError):
                    self._proc.stdin.close()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
        return self._proc.wait()


if __name__ == "__main__":
    sys.exit(main())
