"""Run Autellix service processes as one supervised group (`autellix up`, end-to-end tests).

Why a supervisor of our own instead of a framework: the requirements are few but strict, and each
is a line or two of POSIX here while general supervisors (honcho, supervisord, circus) either miss
one of them or drag in a daemon:

* Every child runs in **its own process group**, so a terminal Ctrl-C reaches only the supervisor,
  which then stops the children in an orderly way (stop signal to each group, wait, SIGKILL).
* **No orphans, even if the supervisor is SIGKILLed.** Two layers: each child asks the kernel for
  ``PR_SET_PDEATHSIG`` (Linux) so it gets its stop signal the moment the supervisor dies, and a
  tiny *watchdog* process (its own session, no death signal) notices the supervisor's death through
  EOF on a pipe and then signals every child group, waits, and SIGKILLs the stubborn ones.
* Output of every child is captured line by line, prefixed with its name, echoed to a stream and
  optionally appended to ``<log_dir>/<name>.log``; the last lines are kept for readiness checks and
  error messages.
* A child that dies without being asked is **reported** (a line on the stream, an ``ExitEvent`` in
  ``unexpected_exits`` and the ``on_exit`` callback), and ``restart(name)`` starts it again, which
  the scheduler-crash tests use.

Caveat: Linux delivers the parent-death signal when the *thread* that forked the child exits, so
start children from a long-lived thread (the main thread, or the event loop's thread), never from
a short-lived worker such as ``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TextIO

__all__ = [
    "ChildExitedError",
    "ChildProcess",
    "ExitEvent",
    "ProcessGroup",
    "ServiceSpec",
    "group_alive",
    "spawn",
]

PR_SET_PDEATHSIG = 1
_KEEP_LINES = 2000


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
    """Start ``argv`` as a child that cannot outlive us (see module docstring).

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


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


# --------------------------------------------------------------------------- watchdog

# Runs as `python -c`, in its own session and without a death signal, so that it survives the
# supervisor. Protocol on stdin, one command a line: "add PGID SIG GRACE", "del PGID", "exit".
# EOF without "exit" means the supervisor died: stop every registered group.
_WATCHDOG_SRC = r"""
import os, select, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)

def alive(pgid):
    try:
        os.killpg(pgid, 0)
    except OSError:
        return False
    try:
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    with open("/proc/%s/stat" % pid) as f:
                        stat = f.read()
                except OSError:
                    continue
                rest = stat[stat.rfind(")") + 2:].split()
                if int(rest[2]) == pgid and rest[0] not in ("Z", "X"):
                    return True
        return False
    except OSError:
        return True

groups = {}
buf = b""
fd = sys.stdin.fileno()
while True:
    ready, _, _ = select.select([fd], [], [], 1.0)
    if not ready:
        # Forget groups that emptied on their own, so a reused pgid is never signalled.
        for pgid in [p for p in groups if not alive(p)]:
            del groups[pgid]
        continue
    chunk = os.read(fd, 4096)
    if not chunk:
        break
    buf += chunk
    while b"\n" in buf:
        line, buf = buf.split(b"\n", 1)
        parts = line.decode().split()
        if not parts:
            continue
        if parts[0] == "add":
            groups[int(parts[1])] = (int(parts[2]), float(parts[3]))
        elif parts[0] == "del":
            groups.pop(int(parts[1]), None)
        elif parts[0] == "exit":
            sys.exit(0)

for pgid, (sig, _) in groups.items():
    try:
        os.killpg(pgid, sig)
    except OSError:
        pass
start = time.monotonic()
while groups:
    for pgid, (_, grace) in list(groups.items()):
        if not alive(pgid):
            del groups[pgid]
        elif time.monotonic() - start >= grace:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except OSError:
                pass
            del groups[pgid]
    time.sleep(0.05)
"""


class _Watchdog:
    """Client side of the watchdog process; writes are best effort (it may already be gone)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG_SRC],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
        )

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

    def close(self) -> None:
        """Tell the watchdog we stopped everything ourselves and let it exit quietly."""
        self._send("exit")
        with self._lock:
            if self._proc.stdin is not None:
                with contextlib.suppress(OSError):
                    self._proc.stdin.close()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


# --------------------------------------------------------------------------- children


@dataclass
class ServiceSpec:
    """How to run one service process.

    ``env`` is added on top of the supervisor's environment (unless ``inherit_env`` is False).
    ``ready_pattern`` is a regex; ``ProcessGroup.wait_ready`` waits for an output line matching it.
    """

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] | None = None
    inherit_env: bool = True
    cwd: str | Path | None = None
    stop_signal: int = signal.SIGTERM
    stop_timeout: float = 10.0
    ready_pattern: str | None = None


@dataclass(frozen=True)
class ExitEvent:
    """A child that exited; ``expected`` is False when nobody asked it to stop."""

    name: str
    pid: int
    returncode: int
    expected: bool
    at: float = field(default_factory=time.time)

    def describe(self) -> str:
        code = self.returncode
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"code {code}"
        return f"{self.name} (pid {self.pid}) exited with {how}"


class ChildExitedError(RuntimeError):
    """A child exited while we were waiting for it to become ready."""


class ChildProcess:
    """One incarnation of a service: its Popen, captured output and exit state."""

    def __init__(self, spec: ServiceSpec, popen: subprocess.Popen[bytes]) -> None:
        self.spec = spec
        self.popen = popen
        self.pid = popen.pid
        self.pgid = popen.pid  # start_new_session: the child leads its own group
        self.started_at = time.time()
        self.lines: deque[str] = deque(maxlen=_KEEP_LINES)
        self.line_count = 0
        self.cond = threading.Condition()
        self.stop_requested = False
        self.exit_event: ExitEvent | None = None
        self.exited = threading.Event()
        self.reader: threading.Thread | None = None
        self.waiter: threading.Thread | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def running(self) -> bool:
        return not self.exited.is_set()

    @property
    def returncode(self) -> int | None:
        return self.exit_event.returncode if self.exit_event else None

    def tail(self, n: int = 20) -> str:
        """The last ``n`` output lines, for error messages."""
        with self.cond:
            return "\n".join(list(self.lines)[-n:])

    def find_line(self, pattern: str | re.Pattern[str], start: int = 0) -> tuple[str | None, int]:
        """First line at absolute index >= start matching ``pattern``, and the next index."""
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        with self.cond:
            first = self.line_count - len(self.lines)
            for i, line in enumerate(self.lines):
                if first + i >= start and rx.search(line):
                    return line, first + i + 1
            return None, self.line_count


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
        self._watchdog: _Watchdog | None = None
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
        assert child.popen.stdout is not None
        log: IO[str] | None = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log = (self.log_dir / f"{child.name}.log").open("a", encoding="utf-8")
            log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} started pid {child.pid}\n")
            log.flush()
        try:
            for raw in child.popen.stdout:
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                with child.cond:
                    child.lines.append(line)
                    child.line_count += 1
                    child.cond.notify_all()
                if log is not None:
                    log.write(line + "\n")
                    log.flush()
                self._emit(self._prefix(child.name) + line)
        finally:
            child.popen.stdout.close()
            if log is not None:
                log.close()

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
                self._watchdog = _Watchdog()
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
            _signal_group(child.pgid, sig)

    def stop(self, name: str, timeout: float | None = None) -> int | None:
        """Stop one child: stop signal to its group, wait, then SIGKILL. Returns its exit code."""
        return self._stop_many([self._children[name]], timeout).get(name)

    def _stop_many(self, children: list[ChildProcess], timeout: float | None) -> dict[str, int]:
        now = time.monotonic()
        deadlines: dict[str, float] = {}
        for child in children:
            child.stop_requested = True
            if child.running:
                _signal_group(child.pgid, child.spec.stop_signal)
            limit = child.spec.stop_timeout if timeout is None else timeout
            deadlines[child.name] = now + limit
        for child in children:
            remaining = deadlines[child.name] - time.monotonic()
            if not child.exited.wait(timeout=max(0.0, remaining)):
                self._emit(self._prefix(child.name) + "did not stop in time, sending SIGKILL")
                _signal_group(child.pgid, signal.SIGKILL)
                child.exited.wait(timeout=10.0)
            # The leader is gone; anything left in its group is an orphan in the making.
            while group_alive(child.pgid) and time.monotonic() < deadlines[child.name]:
                time.sleep(0.05)
            if group_alive(child.pgid):
                _signal_group(child.pgid, signal.SIGKILL)
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
            while True:
                line, _ = child.find_line(rx, start)
                if line is not None:
                    return line
                if child.exit_event is not None:
                    raise ChildExitedError(self._ready_error(child, child.exit_event.describe()))
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(self._ready_error(child, f"not ready after {timeout:.0f}s"))
                child.cond.wait(timeout=min(remaining, 0.5))

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
            line, _ = child.find_line(rx, start)
            if line is not None:
                return line
            if child.exit_event is not None:
                raise ChildExitedError(self._ready_error(child, child.exit_event.describe()))
            if time.monotonic() >= deadline:
                raise TimeoutError(self._ready_error(child, f"not ready after {timeout:.0f}s"))
            await asyncio.sleep(0.05)

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
