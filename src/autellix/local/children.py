"""What the supervisor knows about one service: how to run it, one running incarnation of it
(its Popen, captured output and exit state), and how it ended.

``ChildProcess`` keeps the last lines of output in memory because readiness checks and error
messages need them while the process runs, long before anyone reads its log file.
"""

from __future__ import annotations

import re
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

__all__ = ["ChildExitedError", "ChildProcess", "ExitEvent", "ServiceSpec"]

_KEEP_LINES = 2000


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

    def capture_output(self, log_dir: Path | None, echo: Callable[[str], None]) -> None:
        """Read the child's output to its end (run in a thread of its own): keep the last lines,
        append each to ``<log_dir>/<name>.log`` and hand it to ``echo``."""
        assert self.popen.stdout is not None
        log: IO[str] | None = None
        if log_dir is not None:
            log_dir.mkdir(parents=True, exist_ok=True)
            log = (log_dir / f"{self.name}.log").open("a", encoding="utf-8")
            log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} started pid {self.pid}\n")
            log.flush()
        try:
            for raw in self.popen.stdout:
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                with self.cond:
                    self.lines.append(line)
                    self.line_count += 1
                    self.cond.notify_all()
                if log is not None:
                    log.write(line + "\n")
                    log.flush()
                echo(line)
        finally:
            self.popen.stdout.close()
            if log is not None:
                log.close()
