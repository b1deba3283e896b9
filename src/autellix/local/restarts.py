"""Bring crashed parts of a local stack back: one long-lived thread watches every part, waits
out its backoff (``autellix.local.backoff``) and starts it again, reporting each step.

Why one thread of its own and not the thread that noticed the exit: Linux sends a child its
parent-death signal when the *thread* that forked it exits (``autellix.local.spawn``), so a
restarted child must be forked by a thread that lives as long as the stack. The same thread
serves service processes (``ProcessGroup`` children) and the embedded NATS and Postgres servers,
through the small ``Restartable`` interface.

Every step is a ``RestartEvent``: handed to the listeners (the `autellix up` console) and written
as one JSON line (exit code or signal, the next delay, the crash count, whether it is a crash
loop) to the log file, so a restart is never silent.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from autellix.local.backoff import Backoff, BackoffPolicy

__all__ = ["RestartEvent", "Restartable", "Restarter", "describe_returncode"]

_POLL_S = 0.1


def describe_returncode(code: int) -> str:
    """``signal SIGKILL`` or ``code 1``: how a process ended, as people read it."""
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"


class Restartable(Protocol):
    """A part the restarter can watch and start again."""

    name: str

    def crashed(self) -> tuple[int, int, float] | None:
        """(pid, returncode, uptime_s) once the current run ended without being asked to;
        None while it runs or after a requested stop."""

    def relaunch(self) -> int:
        """Start it again (same configuration, same ports and data); return the new pid."""


@dataclass(frozen=True)
class RestartEvent:
    """One step: ``exited`` (with the delay before the restart), ``restarted``, or
    ``restart_failed`` (the start itself failed; the next delay follows in a new ``exited``)."""

    event: Literal["exited", "restarted", "restart_failed"]
    service: str
    pid: int
    exit: str = ""
    returncode: int | None = None
    attempt: int = 0
    delay_s: float = 0.0
    crash_loop: bool = False
    error: str = ""
    at: float = field(default_factory=time.time)

    def describe(self) -> str:
        """One line for people: what happened and what comes next."""
        loop = " (crash loop)" if self.crash_loop else ""
        if self.event == "exited":
            return (
                f"{self.service} (pid {self.pid}) exited with {self.exit}; "
                f"restart #{self.attempt} in {self.delay_s:.1f}s{loop}"
            )
        if self.event == "restarted":
            return f"{self.service} restarted (pid {self.pid}, restart #{self.attempt}){loop}"
        return f"{self.service} failed to restart: {self.error}{loop}"

    def json_line(self) -> str:
        body = {k: v for k, v in asdict(self).items() if v not in ("", None)}
        body["at"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(self.at))
        body["msg"] = self.describe()
        return json.dumps(body, sort_keys=True)


@dataclass
class _Watched:
    part: Restartable
    backoff: Backoff
    due: float | None = None  # monotonic time of the pending restart
    pending: RestartEvent | None = None


class Restarter:
    """Watch parts, restart the crashed ones after their backoff, report every step.

    ``start()`` the thread from anywhere; ``hold()`` stops restarting (a stack shutting down must
    not bring back what it is stopping) while the thread stays alive, so children it started are
    not sent their death signal before their orderly stop; ``close()`` ends the thread.
    """

    def __init__(
        self,
        policy: BackoffPolicy | None = None,
        *,
        log_path: Path | None = None,
        listeners: list[Callable[[RestartEvent], None]] | None = None,
    ) -> None:
        self.policy = policy or BackoffPolicy()
        self.log_path = log_path
        self.listeners = list(listeners or [])
        self.events: list[RestartEvent] = []
        self._watched: dict[str, _Watched] = {}
        self._lock = threading.Lock()
        self._held = threading.Event()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self, part: Restartable) -> None:
        with self._lock:
            self._watched[part.name] = _Watched(part, Backoff(self.policy))

    def start(self) -> Restarter:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="restarter", daemon=True)
            self._thread.start()
        return self

    def hold(self) -> None:
        self._held.set()

    def close(self) -> None:
        self._held.set()
        self._closed.set()
        if self._thread is not None:
            self._thread.join(timeout=30.0)
            self._thread = None

    # ----- the loop

    def _run(self) -> None:
        while not self._closed.wait(_POLL_S):
            if self._held.is_set():
                continue
            with self._lock:
                watched = list(self._watched.values())
            for w in watched:
                if self._held.is_set():
                    break
                self._step(w)

    def _step(self, w: _Watched) -> None:
        now = time.monotonic()
        if w.due is None:
            crash = w.part.crashed()
            if crash is None:
                return
            pid, code, uptime = crash
            delay = w.backoff.after_crash(uptime)
            w.due = now + delay.seconds
            w.pending = RestartEvent(
                "exited",
                w.part.name,
                pid,
                exit=describe_returncode(code),
                returncode=code,
                attempt=delay.attempt,
                delay_s=delay.seconds,
                crash_loop=delay.crash_loop,
            )
            self._report(w.pending)
            return
        if now < w.due:
            return
        assert w.pending is not None
        previous, w.due, w.pending = w.pending, None, None
        try:
            pid = w.part.relaunch()
        except Exception as exc:  # the next crashed() sees it down again: backoff continues
            self._report(
                RestartEvent(
                    "restart_failed",
                    w.part.name,
                    previous.pid,
                    attempt=previous.attempt,
                    crash_loop=previous.crash_loop,
                    error=f"{exc}".splitlines()[0][:300] if f"{exc}" else repr(exc),
                )
            )
            return
        self._report(
            RestartEvent(
                "restarted",
                w.part.name,
                pid,
                attempt=previous.attempt,
                crash_loop=previous.crash_loop,
            )
        )

    def _report(self, event: RestartEvent) -> None:
        self.events.append(event)
        if self.log_path is not None:
            with contextlib.suppress(OSError):
                self.log_path.parent.mkdir(parents=True, exist_ok=True)
                with self.log_path.open("a", encoding="utf-8") as f:
                    f.write(event.json_line() + "\n")
        for listener in self.listeners:
            with contextlib.suppress(Exception):  # a bad listener must not stop restarts
                listener(event)
