"""A real PgBouncer (Debian's `pgbouncer`) in transaction pooling mode in front of a Postgres:
for the tests that run the stack through a pooler (tests/stack/test_pgbouncer.py, test_netns.py)
and `autellix bench cluster`'s direct-vs-pooled comparison.

PgBouncer refuses to run as root, so as root it drops to the `postgres` (else `nobody`) user
with `-u`, and its directory (under /tmp) is handed to that user. Authentication is `trust`
towards the clients (the test's own loopback or namespace network) and whatever the Postgres
server asks of the role named in the URL.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from autellix.runtime.settings import with_database


def pgbouncer_binary() -> str | None:
    return shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if os.access("/usr/sbin/pgbouncer", os.X_OK) else None
    )


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _server_of(url: str) -> tuple[str, int, str]:
    """(host or socket dir, port, user) of a Postgres URL."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    host = query.get("host", [parts.hostname or "127.0.0.1"])[0]
    port = int(query.get("port", [parts.port or 5432])[0])
    return host, port, parts.username or "postgres"


class PgBouncer:
    """`pgbouncer` with `pool_mode = transaction`, every database passed through to the server
    of `server_url`; `url_for(database_url)` is the same database reached through the pooler."""

    def __init__(self, server_url: str, *, listen: str = "127.0.0.1", pool_size: int = 4) -> None:
        self.server_url = server_url
        self.listen = listen
        self.pool_size = pool_size
        self.port = _free_port(listen)
        # as root, under /tmp: the user PgBouncer drops to cannot enter a private $TMPDIR
        parent = "/tmp" if os.geteuid() == 0 else None
        self.dir = Path(tempfile.mkdtemp(prefix="autellix-pgbouncer-", dir=parent))
        self._popen: subprocess.Popen[bytes] | None = None

    def _write_config(self) -> Path:
        host, port, user = _server_of(self.server_url)
        self.user = user
        (self.dir / "userlist.txt").write_text(f'"{user}" ""\n')
        ini = self.dir / "pgbouncer.ini"
        ini.write_text(
            "[databases]\n"
            f"* = host={host} port={port}\n"
            "[pgbouncer]\n"
            f"listen_addr = {self.listen}\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {self.dir / 'userlist.txt'}\n"
            f"admin_users = {user}\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {self.pool_size}\n"
            "max_client_conn = 1000\n"
            f"logfile = {self.dir / 'pgbouncer.log'}\n"
            f"pidfile = {self.dir / 'pgbouncer.pid'}\n"
        )
        return ini

    def start(self, timeout: float = 15.0) -> PgBouncer:
        binary = pgbouncer_binary()
        assert binary is not None, "pgbouncer is not installed"
        argv = [binary, str(self._write_config())]
        if os.geteuid() == 0:
            runner = next(u for u in ("postgres", "nobody") if _has_user(u))
            entry = pwd.getpwnam(runner)
            for path in (self.dir, *self.dir.iterdir()):
                os.chown(path, entry.pw_uid, entry.pw_gid)
            argv += ["-u", runner]
        log = (self.dir / "stdout.log").open("ab")
        self._popen = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._popen.poll() is not None:
                raise RuntimeError(f"pgbouncer exited: {self.log_tail()}")
            try:
                socket.create_connection((self.listen, self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"pgbouncer not listening after {timeout}s: {self.log_tail()}")

    def url_for(self, database_url: str) -> str:
        """`database_url`'s database and role, through this pooler."""
        name = urlsplit(database_url).path.lstrip("/")
        return with_database(f"postgresql://{self.user}@{self.listen}:{self.port}/", name)

    def show(self, what: str) -> list[dict[str, str]]:
        """`SHOW <what>` on the admin console (simple protocol only, hence psql)."""
        out = subprocess.run(
            ["psql", "-h", self.listen, "-p", str(self.port), "-U", self.user, "-A", "-F", "\t",
             "-c", f"SHOW {what}", "pgbouncer"],
            check=True, capture_output=True, text=True, timeout=10,
        ).stdout.splitlines()  # fmt: skip
        header = out[0].split("\t")
        return [dict(zip(header, line.split("\t"), strict=False)) for line in out[1:-1]]

    def log_tail(self, n: int = 20) -> str:
        lines: list[str] = []
        for name in ("stdout.log", "pgbouncer.log"):
            path = self.dir / name
            if path.exists():
                lines += path.read_text(errors="replace").splitlines()[-n:]
        return "\n".join(lines)

    def stop(self) -> None:
        if self._popen is not None and self._popen.poll() is None:
            self._popen.send_signal(signal.SIGINT)  # SIGINT: shut down at once
            try:
                self._popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._popen.kill()
                self._popen.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PgBouncer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
