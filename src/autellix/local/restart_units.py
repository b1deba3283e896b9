"""The two kinds of part a ``Restarter`` brings back, behind its ``Restartable`` interface:

* ``ChildUnit``: a service process of a ``ProcessGroup`` (frontend, scheduler, engine), started
  again from its own ``ServiceSpec``, so it keeps its name, flags and engine id.
* ``ServerUnit``: an embedded NATS or Postgres server, started again on the same data directory
  and port (``EmbeddedServer.restart``), so every service reconnects to the address it knows and
  JetStream's streams and Postgres' rows are still there.
"""

from __future__ import annotations

import time

from autellix.local.embedded_server import EmbeddedServer
from autellix.local.supervisor import ProcessGroup

__all__ = ["ChildUnit", "ServerUnit"]


class ChildUnit:
    """A ``ProcessGroup`` child; a stop the group asked for is not a crash."""

    def __init__(self, group: ProcessGroup, name: str) -> None:
        self.group = group
        self.name = name

    def crashed(self) -> tuple[int, int, float] | None:
        child = self.group[self.name]
        event = child.exit_event
        if event is None or event.expected:
            return None
        return child.pid, event.returncode, max(0.0, event.at - child.started_at)

    def relaunch(self) -> int:
        child = self.group[self.name]
        return self.group.start(child.spec).pid


class ServerUnit:
    """An embedded server whose process died while the stack wanted it up."""

    def __init__(self, name: str, server: EmbeddedServer) -> None:
        self.name = name
        self.server = server
        self._pid = server.pid or 0
        self._since = time.monotonic()
        self._start_failed = False

    def crashed(self) -> tuple[int, int, float] | None:
        if self._start_failed:
            return self._pid, 1, 0.0
        popen = self.server.popen
        if popen is None or popen.poll() is None:
            return None  # running, adopted (not ours to restart) or stopped on purpose
        self._pid = popen.pid
        return popen.pid, popen.returncode, time.monotonic() - self._since

    def relaunch(self) -> int:
        try:
            self.server.restart()
        except Exception:
            self._start_failed = True
            raise
        self._start_failed = False
        self._since = time.monotonic()
        self._pid = self.server.pid or 0
        return self._pid
