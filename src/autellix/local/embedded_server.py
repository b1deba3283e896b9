"""What the embedded NATS and Postgres servers share: start (prepare, spawn, poll until ready,
retry what the server calls transient), stop escalation, log files and context managers.

Preparing runs in a worker thread under an event loop (it is blocking I/O: initdb, chmod), but
the child is always spawned from the caller's own thread: the parent-death signal
(``autellix.local.spawn``) fires when the thread that started the child exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import IO, Any

from autellix.local.spawn import group_alive

__all__ = ["EmbeddedServer", "EmbeddedServerError", "tail_log"]

log = logging.getLogger(__name__)


class EmbeddedServerError(RuntimeError):
    """An embedded server failed to start; the message ends with its log tail."""


def tail_log(path: Path | None, n: int = 30) -> str:
    """The last ``n`` lines of a server's log, for error messages."""
    if path is None or not path.exists():
        return "(no log)"
    lines = path.read_text(errors="replace").splitlines()
    return "\n".join(lines[-n:])


class EmbeddedServer:
    """Start/stop plumbing shared by both servers: prepare (blocking I/O), spawn, poll ready."""

    startup_timeout: float
    _popen: subprocess.Popen[bytes] | None = None
    _log_file: IO[bytes] | None = None
    _log_path: Path | None = None
    _started = False
    spawn_attempts = 1

    def _prepare(self) -> None:
        raise NotImplementedError

    def _transient(self, exc: EmbeddedServerError) -> bool:
        """Whether a failed start is worth another try (the server's own verdict)."""
        return False

    def _spawn(self) -> None:
        raise NotImplementedError

    def _is_ready(self) -> bool:
        raise NotImplementedError

    def stop(self, timeout: float = 30.0) -> None:
        raise NotImplementedError

    @property
    def name(self) -> str:
        return type(self).__name__

    @property
    def popen(self) -> subprocess.Popen[bytes] | None:
        """Our server process (None before start, after stop, or for an adopted server)."""
        return self._popen

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    def _check_alive(self) -> None:
        if self._popen is not None and self._popen.poll() is not None:
            raise EmbeddedServerError(
                f"{self.name} exited with code {self._popen.returncode} while starting; "
                f"log {self._log_path}:\n{tail_log(self._log_path)}"
            )

    def _fail(self, exc: BaseException) -> None:
        with contextlib.suppress(Exception):
            self.stop(timeout=5.0)
        if isinstance(exc, EmbeddedServerError):
            raise exc
        raise EmbeddedServerError(
            f"{self.name} failed to start: {exc}; log {self._log_path}:\n{tail_log(self._log_path)}"
        ) from exc

    def _ready_by(self, deadline: float) -> bool:
        """Whether the server is ready; an error once ``deadline`` has passed without that."""
        if self._is_ready():
            return True
        if time.monotonic() > deadline:
            raise EmbeddedServerError(
                f"{self.name} not ready after {self.startup_timeout:.0f}s; "
                f"log {self._log_path}:\n{tail_log(self._log_path)}"
            )
        return False

    def start(self) -> EmbeddedServer:
        """Start and block until the server accepts connections (idempotent)."""
        if self._started:
            return self
        try:
            self._prepare()
            for attempt in range(self.spawn_attempts):
                self._spawn()
                try:
                    deadline = time.monotonic() + self.startup_timeout
                    while not self._ready_by(deadline):
                        time.sleep(0.05)
                    break
                except EmbeddedServerError as exc:
                    if attempt + 1 >= self.spawn_attempts or not self._transient(exc):
                        raise
                    time.sleep(1.0)
        except BaseException as exc:
            self._fail(exc)
        self._started = True
        return self

    async def start_async(self) -> EmbeddedServer:
        """``start`` for event-loop code; the child is spawned in the loop's own thread."""
        if self._started:
            return self
        try:
            await asyncio.to_thread(self._prepare)
            for attempt in range(self.spawn_attempts):
                self._spawn()
                try:
                    deadline = time.monotonic() + self.startup_timeout
                    while not self._ready_by(deadline):  # noqa: ASYNC110 - polls the child's files
                        await asyncio.sleep(0.05)
                    break
                except EmbeddedServerError as exc:
                    if attempt + 1 >= self.spawn_attempts or not self._transient(exc):
                        raise
                    await asyncio.sleep(1.0)
        except BaseException as exc:
            self._fail(exc)
        self._started = True
        return self

    def restart(self) -> EmbeddedServer:
        """Start again after the server died on its own (a crash, a SIGKILL): same data
        directory, same port or socket, so clients reconnect to the address they know and find
        their state. Whatever the dead server left in its process group goes first (Postgres
        backends still holding its shared memory would make the new one refuse to start).
        Call it from a long-lived thread, as ``start``."""
        old = self._popen
        if old is not None:
            old.poll()
            if group_alive(old.pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(old.pid, signal.SIGKILL)
        self._close_log()
        self._popen = None
        self._started = False
        return self.start()

    async def stop_async(self, grace: float = 30.0) -> None:
        """``stop`` without blocking the loop; ``grace`` is the wait before escalating."""
        await asyncio.to_thread(self.stop, grace)

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> Any:
        return await self.start_async()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop_async()

    def _open_log(self, path: Path) -> IO[bytes]:
        self._log_path = path
        self._log_file = path.open("ab")
        return self._log_file

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def _terminate(self, first: int, second: int | None, timeout: float) -> None:
        """Stop our child: ``first`` signal, wait; ``second``, wait 5 s; SIGKILL its group."""
        popen = self._popen
        if popen is None:
            return
        pgid = popen.pid
        for sig, wait in ((first, timeout), (second, 5.0)):
            if popen.poll() is not None or sig is None:
                break
            with contextlib.suppress(ProcessLookupError):
                popen.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(timeout=wait)
        if popen.poll() is None:
            log.warning("%s did not stop, killing it", self.name)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            popen.wait()
        if group_alive(pgid):  # helpers of the server that outlived it
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        self._popen = None
