"""``stack.json``: where a running `autellix up` stack listens, so tools find it without flags.

`autellix up` writes ``<data-dir>/stack.json`` (mode 0600: once the stack has credentials they
are named here) and points a per-user *current stack* file at it
(``<user state dir>/current-stack.json``, platformdirs; ``XDG_STATE_HOME`` on Linux). The CLI's
``--nats-url`` / ``--database-url`` and ``Client()`` fall back to it when neither a flag nor an
``AUTELLIX_*`` variable names a server (``discover``). A stack whose `autellix up` process is gone
(killed before it could remove its file) is ignored, never connected to.

Layout (``version`` 1)::

    {"version": 1, "pid": 4242, "started_at": "2026-01-01T12:00:00Z", "namespace": "autellix",
     "nats_url": "nats://127.0.0.1:4222", "http_url": "http://127.0.0.1:8000",
     "database_url": "postgresql://postgres@/postgres?host=...",
     "credentials": {"nats_user_file": null, "api_key_file": null}}

``credentials`` names the client credentials of an authenticated stack: ``nats_user_file``, the
client role's NATS user file (`autellix.runtime.nats_auth`), and ``api_key_file``; null while the
stack runs without authentication (`autellix up --insecure`).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from autellix.local.spawn import pid_alive

__all__ = [
    "STACK_FILE",
    "StackInfo",
    "current_pointer",
    "discover",
    "read",
    "remove",
    "write",
    "write_private",
]

STACK_FILE = "stack.json"
_POINTER = "current-stack.json"
_VERSION = 1


@dataclass(frozen=True)
class StackInfo:
    """What a client needs to reach one running stack."""

    nats_url: str
    database_url: str
    namespace: str
    http_url: str | None = None
    pid: int = field(default_factory=os.getpid)
    started_at: str = field(
        default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    )
    credentials: dict[str, str | None] = field(
        default_factory=lambda: {"nats_user_file": None, "api_key_file": None}
    )

    def to_json(self) -> dict[str, Any]:
        return {"version": _VERSION, **asdict(self)}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> StackInfo:
        if obj.get("version") != _VERSION:
            raise ValueError(f"unknown stack.json version {obj.get('version')!r}")
        return cls(
            nats_url=str(obj["nats_url"]),
            database_url=str(obj["database_url"]),
            namespace=str(obj.get("namespace") or "autellix"),
            http_url=obj.get("http_url"),
            pid=int(obj["pid"]),
            started_at=str(obj.get("started_at", "")),
            credentials=dict(obj.get("credentials") or {}),
        )


def current_pointer() -> Path:
    """The per-user file that names the current stack's ``stack.json``."""
    import platformdirs

    return Path(platformdirs.user_state_dir("autellix", appauthor=False)) / _POINTER


def write_private(path: Path, text: str) -> None:
    """Write ``text`` atomically with mode 0600 from the first byte (no readable window)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write(data_dir: Path, info: StackInfo) -> Path:
    """Write ``<data_dir>/stack.json`` and make it the current stack; returns its path."""
    path = data_dir.absolute() / STACK_FILE
    write_private(path, json.dumps(info.to_json(), indent=2) + "\n")
    write_private(current_pointer(), json.dumps({"stack_file": str(path)}) + "\n")
    return path


def remove(path: Path) -> None:
    """Remove a stack's file, and the current-stack pointer if it still names it."""
    with contextlib.suppress(OSError):
        path.unlink()
    pointer = current_pointer()
    with contextlib.suppress(OSError, ValueError, KeyError):
        if json.loads(pointer.read_text())["stack_file"] == str(path):
            pointer.unlink()


def read(path: Path) -> StackInfo | None:
    """The stack described by ``path`` if its `autellix up` still runs, else None."""
    try:
        info = StackInfo.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return info if pid_alive(info.pid) else None


def discover() -> StackInfo | None:
    """The current stack (the newest `autellix up` of this user that still runs), or None."""
    try:
        target = Path(json.loads(current_pointer().read_text())["stack_file"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return read(target)
