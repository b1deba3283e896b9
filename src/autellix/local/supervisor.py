"""Run Autellix service processes as one supervised group (`autellix up`, end-to-end tests).

Why a supervisor of our own instead of a framework: the requirements are few but strict, and each
is a line or two of POSIX here while general supervisors (honcho, supervisord, circus) either miss
one of them or drag in a daemon:

* Every child runs in **its own process group**, so a terminal Ctrl-C reaches only the supervisor,
  which then stops the children in an orderly way (stop signal to each group, wait, SIGKILL).
* **No orphans, even if the supervisor is SIGKILLed.** Two layers: each child asks the kernel for
  ``PR_SET_PDEATHSIG`` (Linux) so it gets its stop signal the moment the supervisor dies
  (``autellix.local.spawn``), and a tiny *watchdog* process (``autellix.local.watchdog``: its own
  session, no death signal) notices the supervisor's death through EOF on a pipe and then signals
  every child group, waits, and SIGKILLs the stubborn ones.
* Output of every child is captured line by line, prefixed with its name, echoed to a stream and
  optionally appended to ``<log_dir>/<name>.log``; the last lines are kept for readiness checks and
  error messages (``autellix.local.children``).
* A child that dies without being asked is **reported** (a line on the stream, an ``ExitEvent`` in
  ``unexpected_exits`` and the ``on_exit`` callback), and ``restart(name)`` starts it again, which
  the scheduler-crash tests use.

Caveat: Linux delivers the parent-death signal when the *thread* that forked the child exits, so
start children from a long-lived thread (the main thread, or the event loop's thread), never from
a short-lived worker such as ``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from autellix.local.children import ChildExitedError, ChildProcess, ExitEvent, ServiceSpec
from autellix.local.spawn import group_alive, signal_group, spawn
from autellix.local.watchdog import Watchdog

__all__ = [
    "ChildExitedError",
    "ChildProcess",
    "ExitEvent",
    "ProcessGroup",
    "ServiceSpec",
    "group_alive",
    "spawn",
]


class ProcessGroup:
    """Start, watch, restart and stop named service processes.

    Use as a (sync or async) context manager, or call ``stop_all()`` yourself. Thread-safe for the
    operations tests need; output capture and exit detection run in daemon threads, so it works
    the same from sync code and from an event loop.
    """

    def __init__(
        self,
        *,
        log_dir: str | Path | None = None,
        echo: bool = True,
        stream: TextIO | None = None,
        on_exit: Callable[[ExitEvent], None] | None = None,
        watchdog: bool = True,
    ) -> None:
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.echo = echo
        self.stream = stream
        self.on_exit = on_exit
        self.unexpected_exits: list[ExitEvent] = []
        self._children: dict[str, ChildProcess] = {}
        self._order: list[str] = []
        self._lock = threading.RLock()
        self._out_lock = threading.Lock()
        self._use_watchdog = watchdog
        self._watchdog: Watchdog | None = None
        self._closed = False
        self._changed = threading.Event()
        self.shutdown_signal: str | None = None
        self._interrupt_on_signal = False
        self._previous_handlers: dict[int, Any] = {}

    # ----- inspection

    @property
    def names(self) -> list[str]:
        return list(self._order)

    def __getitem__(self, name: str) -> ChildProcess:
        return self._children[name]

    def __contains__(self, name: str) -> bool:
        return name in self._children

    def running(self) -> list[str]:
        return [n for n in self._order if self._children[n].running]

    # ----- output

    def _emit(self, text: str) -> None:
        if not self.echo:
            return
        stream = self.stream or sys.stderr
        with self._out_lock:
            try:
                stream.write(text + "\n")
                stream.flush()
            except (ValueError, OSError):
                pass  # stream closed (interpreter shutdown); output is still in the log file

    def _prefix(self, name: str) -> str:
        width = max((len(n) for n in self._order), default=len(name))
        return f"{name:<{width}} | "

    def _read_output(self, child: ChildProcess) -> None:
        child.capture_output(self.log_dir, lambda line: self._emit(self._prefix(child.name) + line))

    def _wait_exit(self, child: ChildProcess) -> None:
        code = child.popen.wait()
        if child.reader is not None:
            child.reader.join(timeout=2.0)  # let the last lines print before the exit notice
        with self._lock:
            expected = child.stop_requested or self._closed
        event = ExitEvent(child.name, child.pid, code, expected)
        with child.cond:
            child.exit_event = event
            child.cond.notify_all()
        child.exited.set()
        if self._watchdog is not None and not group_alive(child.pgid):
            self._watchdog.remove(child.pgid)
        if not expected:
            self.unexpected_exits.append(event)
            self._emit(self._prefix(child.name) + f"!!! {event.describe()} unexpectedly")
        self._changed.set()
        if self.on_exit is not None:
            try:
                self.on_exit(event)
            except Exception as exc:  # a bad callback must not kill exit handling
                self._emit(f"supervisor | on_exit callback failed: {exc!r}")

    # ----- lifecycle

    def start(self, spec: ServiceSpec) -> ChildProcess:
        """Start ``spec`` (name must not be running already) and return its incarnation."""
        with self._lock:
            if self._closed:
                raise RuntimeError("process group is stopped")
            old = self._children.get(spec.name)
            if old is not None and old.running:
                raise ValueError(f"{spec.name} is already running (pid {old.pid})")
            if self._use_watchdog and self._watchdog is None:
                self._watchdog = Watchdog()
            env = dict(os.environ) if spec.inherit_env else {}
            env.setdefault("PYTHONUNBUFFERED", "1")  # stream child logs line by line
            if spec.env:
                env.update(spec.env)
            popen = spawn(
                spec.argv,
                env=env,
                cwd=spec.cwd,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                death_signal=spec.stop_signal,
            )
            child = ChildProcess(spec, popen)
            if self._watchdog is not None:
                self._watchdog.add(child.pgid, spec.stop_signal, spec.stop_timeout)
            self._children[spec.name] = child
            if spec.name not in self._order:
                self._order.append(spec.name)
            child.reader = threading.Thread(
                target=self._read_output, args=(child,), name=f"out-{spec.name}", daemon=True
            )
            child.waiter = threading.Thread(
                target=self._wait_exit, args=(child,), name=f"wait-{spec.name}", daemon=True
            )
            child.reader.start()
            child.waiter.start()
            return child

    def signal(self, name: str, sig: int, *, expected: bool = True) -> None:
        """Send ``sig`` to the child's whole process group (tests: SIGKILL a scheduler).

        ``expected`` marks the resulting exit as requested, so it is not reported as a failure.
        """
        child = self._children[name]
        if expected:
            child.stop_requested = True
        if child.running:
            signal_group(child.pgid, sig)

    def stop(self, name: str, timeout: float | None = None) -> int | None:
        """Stop one child: stop signal to its group, wait, then SIGKILL. Returns its exit code."""
        return self._stop_many([self._children[name]], timeout).get(name)

    def _stop_many(self, children: list[ChildProcess], timeout: float | None) -> dict[str, int]:
        now = time.monotonic()
        deadlines: dict[str, float] = {}
        for child in children:
            child.stop_requested = True
            if child.running:
                signal_group(child.pgid, child.spec.stop_signal)
            limit = child.spec.stop_timeout if timeout is None else timeout
            deadlines[child.name] = now + limit
        for child in children:
            remaining = deadlines[child.name] - time.monotonic()
            if not child.exited.wait(timeout=max(0.0, remaining)):
                self._emit(self._prefix(child.name) + "did not stop in time, sending SIGKILL")
                signal_group(child.pgid, signal.SIGKILL)
                child.exited.wait(timeout=10.0)
            # The leader is gone; anything left in its group is an orphan in the making.
            while group_alive(child.pgid) and time.monotonic() < deadlines[child.name]:
                time.sleep(0.05)
            if group_alive(child.pgid):
                signal_group(child.pgid, signal.SIGKILL)
            if self._watchdog is not None:
                self._watchdog.remove(child.pgid)
        return {c.name: c.returncode for c in children if c.returncode is not None}

    def restart(self, name: str, timeout: float | None = None) -> ChildProcess:
        """Stop ``name`` if it still runs, then start it again with the same spec."""
        child = self._children[name]
        if child.running:
            self.stop(name, timeout)
        else:
            child.exited.wait()
        return self.start(child.spec)

    def stop_all(self, timeout: float | None = None) -> dict[str, int]:
        """Stop every child (all at once, newest first in the log) and the watchdog."""
        with self._lock:
            self._closed = True
            children = [self._children[n] for n in reversed(self._order)]
        codes = self._stop_many(children, timeout)
        for child in children:
            if child.waiter is not None:
                child.waiter.join(timeout=5.0)
        if self._watchdog is not None:
            self._watchdog.close()
            self._watchdog = None
        self.restore_signal_handlers()
        return codes

    # ----- readiness

    def _check_ready(
        self, child: ChildProcess, rx: re.Pattern[str], start: int
    ) -> tuple[bool, int, ExitEvent | None]:
        line, nxt = child.find_line(rx, start)
        if line is not None:
            return True, nxt, None
        return False, nxt, child.exit_event

    def _ready_error(self, child: ChildProcess, why: str) -> str:
        return f"{child.name} {why}; last output:\n{child.tail()}"

    def wait_ready(
        self, name: str, pattern: str | None = None, timeout: float = 30.0, start: int = 0
    ) -> str:
        """Block until the child prints a line matching ``pattern`` (default: its spec's).

        Returns the matching line. Raises ChildExitedError if it exits first, TimeoutError if
        ``timeout`` passes. ``start`` skips lines before that absolute index.
        """
        child = self._children[name]
        rx = re.compile(pattern or child.spec.ready_pattern or ".")
        deadline = time.monotonic() + timeout
        with child.cond:
            while (line := self._ready_line(child, rx, start, deadline, timeout)) is None:
                child.cond.wait(timeout=min(deadline - time.monotonic(), 0.5))
            return line

    async def wait_ready_async(
        self,
        name: str,
        pattern: str | None = None,
        timeout: float = 30.0,  # noqa: ASYNC109 - its error carries the child's output
        start: int = 0,
    ) -> str:
        """``wait_ready`` for event-loop code: polls, so it is cheap to cancel."""
        child = self._children[name]
        rx = re.compile(pattern or child.spec.ready_pattern or ".")
        deadline = time.monotonic() + timeout
        while True:
            line = self._ready_line(child, rx, start, deadline, timeout)
            if line is not None:
                return line
            await asyncio.sleep(0.05)  # the child's reader thread signals a Condition, not the loop

    def _ready_line(
        self, child: ChildProcess, rx: re.Pattern[str], start: int, deadline: float, timeout: float
    ) -> str | None:
        """The ready line if `child` printed it; raises if it exited or `deadline` passed."""
        line, _ = child.find_line(rx, start)
        if line is not None:
            return line
        if child.exit_event is not None:
            raise ChildExitedError(self._ready_error(child, child.exit_event.describe()))
        if time.monotonic() >= deadline:
            raise TimeoutError(self._ready_error(child, f"not ready after {timeout:.0f}s"))
        return None

    # ----- running in the foreground (`autellix up`)

    def install_signal_handlers(self, *, interrupt: bool = True) -> None:
        """Route SIGINT/SIGTERM to this group; call it first thing in `autellix up`.

        A signal is recorded in ``shutdown_signal`` and makes ``wait``/``wait_async`` return.
        With ``interrupt`` (sync code) the first signal also raises KeyboardInterrupt in the main
        thread, so a blocking startup step (``wait_ready``) is abandoned and the caller's
        ``finally: stop_all()`` runs; use ``interrupt=False`` under an event loop. Signals that
        arrive during ``stop_all`` are only recorded, so a second Ctrl-C cannot cut the cleanup
        short. ``stop_all`` restores the previous handlers. Main thread only.
        """
        if self._previous_handlers:
            return
        self._interrupt_on_signal = interrupt

        def handler(signum: int, _frame: object) -> None:
            first = self.shutdown_signal is None
            if first:
                self.shutdown_signal = signal.Signals(signum).name
            self._changed.set()
            if first and self._interrupt_on_signal and not self._closed:
                raise KeyboardInterrupt(self.shutdown_signal)

        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous_handlers[sig] = signal.signal(sig, handler)

    def restore_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, previous in self._previous_handlers.items():
            signal.signal(sig, previous)
        self._previous_handlers.clear()

    def _wait_reason(self, stop_on_failure: bool) -> str | None:
        if self.shutdown_signal is not None:
            return f"signal:{self.shutdown_signal}"
        if stop_on_failure and self.unexpected_exits:
            return f"failure:{self.unexpected_exits[0].name}"
        return None

    def wait(self, *, stop_on_failure: bool = True) -> str:
        """Block until SIGINT/SIGTERM or (optionally) an unexpected child exit.

        Returns "signal:<NAME>" or "failure:<child>"; the caller then calls ``stop_all``.
        Installs the signal handlers if ``install_signal_handlers`` was not called.
        """
        self.install_signal_handlers()
        try:
            while (reason := self._wait_reason(stop_on_failure)) is None:
                self._changed.wait(timeout=0.5)
                self._changed.clear()
        except KeyboardInterrupt:
            reason = f"signal:{self.shutdown_signal or 'SIGINT'}"
        return reason

    async def wait_async(self, *, stop_on_failure: bool = True) -> str:
        """``wait`` for event-loop code (handlers installed with ``interrupt=False``)."""
        self.install_signal_handlers(interrupt=False)
        # Woken by signal handlers and exit-watcher threads; a 0.1 s poll is simpler and more
        # robust than handing each of them the loop to set an asyncio.Event.
        while (reason := self._wait_reason(stop_on_failure)) is None:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        return reason

    # ----- context managers

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    async def __aenter__(self) -> ProcessGroup:
        return self

    async def __aexit__(self, *exc: object) -> None:
        # stop_all blocks (waits for exits); run it in a thread so the loop keeps serving, then
        # restore the signal handlers here, in the loop's (main) thread.
        await asyncio.to_thread(self.stop_all)
        self.restore_signal_handlers()
