"""``EmbeddedNatsCluster``: a JetStream cluster of ``nats-server`` processes on loopback.

What a multi-host deployment runs as a StatefulSet (``deploy/k8s/``), on one machine: every
server routes to every other (full mesh, so any one can restart and find the rest), each under a
stable name with its own data directory, so a killed server that comes back rejoins with its
JetStream state and catches up from the others. ``url`` lists all client URLs comma-separated,
which is what services and clients take (``--nats-url`` / ``AUTELLIX_NATS_URL``).

Route ports are chosen before the servers start (routes must name them); the small chance that
another process takes one in between is met by starting the whole cluster again on new ports.
"""

from __future__ import annotations

import contextlib
import socket
import time
from pathlib import Path
from typing import Any

from autellix.local.embedded_nats import EmbeddedNats
from autellix.local.embedded_server import EmbeddedServerError

__all__ = ["EmbeddedNatsCluster"]

_START_TRIES = 3


def _free_ports(host: str, n: int) -> list[int]:
    """``n`` distinct TCP ports that nothing listens on right now (all held open together)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for sock in socks:
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in socks]


class EmbeddedNatsCluster:
    """``size`` clustered JetStream servers; ``kill``/``restart`` one to test failover.

    ``data_dir`` keeps each server's state in ``data_dir/<name>``; without it each server gets a
    temp dir, removed on ``stop``. Start from a long-lived thread (``autellix.local.spawn``).
    """

    def __init__(
        self,
        size: int = 3,
        data_dir: str | Path | None = None,
        *,
        host: str = "127.0.0.1",
        name: str = "autellix",
        startup_timeout: float = 30.0,
    ) -> None:
        if size < 1:
            raise ValueError("a cluster needs at least one server")
        self.size = size
        self.data_dir = Path(data_dir).expanduser() if data_dir is not None else None
        self.host = host
        self.name = name
        self.startup_timeout = startup_timeout
        self.nodes: list[EmbeddedNats] = []

    @property
    def url(self) -> str:
        """Every server's client URL, comma-separated (what ``--nats-url`` takes)."""
        if not self.nodes:
            raise RuntimeError("EmbeddedNatsCluster is not started")
        return ",".join(node.url for node in self.nodes)

    def _make_nodes(self) -> list[EmbeddedNats]:
        route_ports = _free_ports(self.host, self.size)
        routes = tuple(f"nats://{self.host}:{p}" for p in route_ports)
        nodes = []
        for i, port in enumerate(route_ports):
            server = f"{self.name}-{i}"
            nodes.append(
                EmbeddedNats(
                    self.data_dir / server if self.data_dir is not None else None,
                    host=self.host,
                    startup_timeout=self.startup_timeout,
                    server_name=server,
                    cluster_name=self.name,
                    cluster_port=port,
                    routes=routes,
                )
            )
        return nodes

    def start(self) -> EmbeddedNatsCluster:
        """Start every server and wait until the cluster has a JetStream meta leader that all
        of them follow (before that, creating a stream fails)."""
        for attempt in range(_START_TRIES):
            self.nodes = self._make_nodes()
            try:
                for node in self.nodes:
                    node.start()
                self.wait_healthy()
                return self
            except EmbeddedServerError:
                self.stop(timeout=5.0)
                if attempt + 1 >= _START_TRIES:
                    raise
        raise AssertionError("unreachable")

    def wait_healthy(self, timeout: float | None = None) -> None:
        """Block until every running server reports healthy (JetStream current)."""
        deadline = time.monotonic() + (timeout or self.startup_timeout)
        while not all(node.healthy() for node in self.nodes if node.pid is not None):
            if time.monotonic() > deadline:
                sick = [node.server_name for node in self.nodes if not node.healthy()]
                raise EmbeddedServerError(f"NATS cluster not healthy: {sick}")
            time.sleep(0.1)

    def kill(self, index: int) -> None:
        """SIGKILL server ``index``: no lame-duck, no flush; its data directory stays."""
        popen: Any = self.nodes[index].popen
        if popen is not None and popen.poll() is None:
            popen.kill()
            popen.wait()

    def restart(self, index: int) -> None:
        """Start a killed server again on its ports and data, and wait until it is current."""
        self.nodes[index].restart()
        self.wait_healthy()

    def stop(self, timeout: float = 30.0) -> None:
        for node in self.nodes:
            node.stop(timeout=timeout)

    def __enter__(self) -> EmbeddedNatsCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
