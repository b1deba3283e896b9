"""``EmbeddedPostgres``: a PostgreSQL server from the binaries of the ``pgserver`` wheel.

We use the wheel's binaries but not its ``PostgresServer`` class: that class stops the server only
when a shared on-disk list of "handle" pids empties, so one crashed process leaves the server
running forever, and ``pg_ctl start`` daemonizes the postmaster, so it outlives a SIGKILLed
`autellix up`. Here the postmaster is our child (parent-death signal = fast shutdown), stale lock
files left by a killed server are detected and removed, and a restart on the same data directory
just works.

It listens on a Unix socket only. Unix socket paths are limited to ~107 bytes; a long data path
puts the socket under the temp dir. As root it runs as the ``pgserver`` OS user
(``autellix.local.pg_os_user``).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from autellix.local.embedded_server import EmbeddedServer, EmbeddedServerError
from autellix.local.pg_os_user import (
    PG_OS_USER,
    ensure_install_readable,
    ensure_os_user,
    ensure_traversable,
    is_root,
)
from autellix.local.pg_pidfile import is_postmaster_of, read_pidfile
from autellix.local.spawn import spawn
from autellix.local.temp_dirs import make_temp_dir
from autellix.runtime.settings import default_data_dir

__all__ = ["EmbeddedPostgres", "pgserver_bin_dir"]

log = logging.getLogger(__name__)

_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes on Linux, 104 on macOS; keep a margin


def pgserver_bin_dir() -> Path:
    """The bundled PostgreSQL ``bin`` directory of the ``pgserver`` wheel (not imported)."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "pgserver not installed; `pip install pgserver` or pass --database-url"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (path / "postgres").exists():
        raise FileNotFoundError(f"no PostgreSQL binaries in {path}")
    return path


class EmbeddedPostgres(EmbeddedServer):
    """A PostgreSQL server from the ``pgserver`` wheel, listening on a Unix socket only.

    ``data_dir`` is the PGDATA directory (created and initialised on first start; default
    ``default_data_dir()/"pgdata"``). Use ``EmbeddedPostgres.ephemeral()`` for a throw-away
    server (temp dir, removed on stop). ``durable=False`` turns fsync off (initdb takes ~0.3 s
    instead of several seconds on slow disks; data survives process crashes but not a machine
    crash): right for tests and demos, not for `autellix up`'s default.

    If a server from an earlier run is still live on the data directory it is *adopted*: ``url``
    points to it and ``stop()`` leaves it running unless ``stop_adopted`` is set.
    """

    def __init__(
        self,
        data_dir: str | Path | None = None,
        *,
        port: int = 5432,
        startup_timeout: float = 60.0,
        stop_adopted: bool = False,
        os_user: str = PG_OS_USER,
        server_settings: dict[str, str] | None = None,
        durable: bool = True,
        _ephemeral_base: Path | None = None,
    ) -> None:
        self.pgdata = (
            Path(data_dir).expanduser() if data_dir else default_data_dir() / "pgdata"
        ).absolute()
        self.port = port  # names the socket file (.s.PGSQL.<port>); no TCP listener
        self.startup_timeout = startup_timeout
        self.stop_adopted = stop_adopted
        self.os_user = os_user if is_root() else None
        self.durable = durable
        self.server_settings = dict(server_settings or {})
        if not durable:  # data that may be lost on a machine crash: skip the fsyncs
            for key in ("fsync", "synchronous_commit", "full_page_writes"):
                self.server_settings.setdefault(key, "off")
        self._ephemeral_base = _ephemeral_base
        self.socket_dir: Path | None = None
        self.adopted_pid: int | None = None
        self._uid_gid: tuple[int, int] | None = None

    # After a crash, the dead server's backends can hold its shared memory for a moment after
    # the postmaster is gone; Postgres then refuses to start ("pre-existing shared memory block
    # is still in use"). Waiting a second and starting again is the documented remedy.
    spawn_attempts = 10

    def _transient(self, exc: EmbeddedServerError) -> bool:
        return "pre-existing shared memory block" in str(exc)

    @classmethod
    def ephemeral(cls, **kwargs: Any) -> EmbeddedPostgres:
        """A throw-away server: its own temp dir, durability off, everything removed on stop."""
        base = make_temp_dir("autellix-pg-")
        kwargs.setdefault("durable", False)
        return cls(base / "pgdata", _ephemeral_base=base, **kwargs)

    # ----- urls

    @property
    def url(self) -> str:
        """``postgresql://postgres@/postgres?host=<socket dir>``: asyncpg and SQLAlchemy read it."""
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        if self.socket_dir is None:
            raise RuntimeError("EmbeddedPostgres is not started")
        port = f"&port={self.port}" if self.port != 5432 else ""
        return f"postgresql://postgres@/{database}?host={self.socket_dir}{port}"

    @property
    def pid(self) -> int | None:
        if self._popen is not None:
            return self._popen.pid
        return self.adopted_pid

    @property
    def log_path(self) -> Path:
        return self.pgdata / "autellix-postgres.log"

    # ----- start

    def _choose_socket_dir(self) -> Path:
        """Beside the data directory when the socket's path fits in `sun_path`; else a short
        directory named by the data directory's hash in the first temp root where it fits
        ($TMPDIR itself can be too long: then /tmp, /var/tmp, /dev/shm)."""

        def fits(d: Path) -> bool:
            return len(str(d / f".s.PGSQL.{self.port}.lock")) <= _SOCKET_PATH_MAX

        candidate = self.pgdata.parent / f"{self.pgdata.name}.run"
        if fits(candidate):
            return candidate
        digest = hashlib.sha256(str(self.pgdata).encode()).hexdigest()[:12]
        for root in (tempfile.gettempdir(), "/tmp", "/var/tmp", "/dev/shm"):
            short = Path(root) / f"autellix-pgsock-{digest}"
            if fits(short) and os.path.isdir(root) and os.access(root, os.W_OK | os.X_OK):
                return short
        raise EmbeddedServerError(
            f"no directory for Postgres' Unix socket: {candidate} is longer than a socket path "
            f"may be ({_SOCKET_PATH_MAX} bytes) and no short temp directory is writable"
        )

    def _own(self, path: Path, mode: int) -> None:
        if self._uid_gid is not None:
            os.chown(path, *self._uid_gid)
        path.chmod(mode)

    def _run_as_pg(self, argv: list[str]) -> None:
        kwargs: dict[str, Any] = {}
        if self.os_user is not None:
            kwargs = {"user": self.os_user, "group": self.os_user, "extra_groups": []}
        result = subprocess.run(
            argv, capture_output=True, text=True, check=False, cwd=self.pgdata.parent, **kwargs
        )
        if result.returncode != 0:
            name = Path(argv[0]).name
            raise EmbeddedServerError(
                f"{name} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
            )

    def _prepare(self) -> None:
        bin_dir = pgserver_bin_dir()
        self._bin = bin_dir
        if self.os_user is not None:
            self._uid_gid = ensure_os_user(self.os_user)
            ensure_install_readable(bin_dir)
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        if self.os_user is not None:
            ensure_traversable(self.pgdata)

        # A server from an earlier run still alive on this data dir: adopt it.
        lines = read_pidfile(self.pgdata)
        if lines and lines[0].strip().isdigit():
            pid = int(lines[0])
            if is_postmaster_of(pid, self.pgdata) and len(lines) >= 8:
                self.adopted_pid = pid
                self.socket_dir = Path(lines[4].strip())
                self.port = int(lines[3])
                log.info("adopting running Postgres pid %s on %s", pid, self.pgdata)
                return

        fresh = not (self.pgdata / "PG_VERSION").exists()
        if fresh:
            if self.pgdata.exists() and any(self.pgdata.iterdir()):
                raise EmbeddedServerError(
                    f"{self.pgdata} is not empty but holds no PostgreSQL cluster; "
                    "remove it or choose another data directory"
                )
            self.pgdata.mkdir(exist_ok=True)
            self._own(self.pgdata, 0o700)
            argv = [str(bin_dir / "initdb"), "-D", str(self.pgdata), "-U", "postgres"]
            argv += ["--auth=trust", "--encoding=UTF8", "--no-locale"]
            if not self.durable:
                argv.append("--no-sync")
            self._run_as_pg(argv)
        elif self._uid_gid is not None and self.pgdata.stat().st_uid != self._uid_gid[0]:
            raise EmbeddedServerError(
                f"{self.pgdata} is owned by uid {self.pgdata.stat().st_uid}, not by the "
                f"{self.os_user!r} user that runs Postgres; fix with "
                f"`chown -R {self.os_user}: {self.pgdata}`"
            )

        self.socket_dir = self._choose_socket_dir()
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        self._own(self.socket_dir, 0o755)
        # No live postmaster (checked above): lock files left by a killed one are stale, and
        # Postgres refuses to start over them when their pid has been reused.
        if lines is not None:
            log.info("removing stale postmaster.pid in %s", self.pgdata)
            (self.pgdata / "postmaster.pid").unlink(missing_ok=True)
        for stale in self.socket_dir.glob(f".s.PGSQL.{self.port}*"):
            stale.unlink(missing_ok=True)

    def _spawn(self) -> None:
        if self.adopted_pid is not None:
            return
        assert self.socket_dir is not None
        argv = [
            str(self._bin / "postgres"),
            "-D", str(self.pgdata),
            "-k", str(self.socket_dir),
            "-p", str(self.port),
            "-c", "listen_addresses=",
        ]  # fmt: skip
        for key, value in self.server_settings.items():
            argv += ["-c", f"{key}={value}"]
        out = self._open_log(self.log_path)
        kwargs: dict[str, Any] = {}
        if self.os_user is not None:
            kwargs = {"user": self.os_user, "group": self.os_user}
        # SIGINT = "fast shutdown": roll back sessions, checkpoint, remove lock files.
        self._popen = spawn(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=self.pgdata,
            death_signal=signal.SIGINT,
            **kwargs,
        )

    def _is_ready(self) -> bool:
        self._check_alive()
        if self.adopted_pid is not None:
            lines = read_pidfile(self.pgdata) or []
            return len(lines) >= 8 and lines[7].strip() == "ready"
        assert self.socket_dir is not None
        lines = read_pidfile(self.pgdata)
        if not lines or len(lines) < 8 or self._popen is None:
            return False
        if int(lines[0]) != self._popen.pid or lines[7].strip() != "ready":
            return False
        return (self.socket_dir / f".s.PGSQL.{self.port}").exists()

    # ----- stop

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (SIGINT), immediate (SIGQUIT) after ``timeout``, then SIGKILL.

        Leaves no postmaster.pid or socket lock behind; an ephemeral server's files are removed.
        An adopted server is left running unless ``stop_adopted``.
        """
        if self._popen is not None:
            self._terminate(signal.SIGINT, signal.SIGQUIT, timeout)
        elif self.adopted_pid is not None and self.stop_adopted:
            self._stop_adopted(timeout)
        self._close_log()
        if self.adopted_pid is None or self.stop_adopted:
            lines = read_pidfile(self.pgdata)
            pid = int(lines[0]) if lines and lines[0].strip().isdigit() else None
            if pid is not None and not is_postmaster_of(pid, self.pgdata):
                (self.pgdata / "postmaster.pid").unlink(missing_ok=True)
            if self.socket_dir is not None and self.socket_dir.exists():
                for stale in self.socket_dir.glob(f".s.PGSQL.{self.port}*"):
                    stale.unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    self.socket_dir.rmdir()
        if self._ephemeral_base is not None:
            shutil.rmtree(self._ephemeral_base, ignore_errors=True)
        self.adopted_pid = None
        self._started = False

    def _stop_adopted(self, timeout: float) -> None:
        pid = self.adopted_pid
        assert pid is not None
        deadline = time.monotonic() + timeout
        for sig in (signal.SIGINT, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            while is_postmaster_of(pid, self.pgdata) and time.monotonic() < deadline:
                time.sleep(0.05)
            if not is_postmaster_of(pid, self.pgdata):
                return
            deadline = time.monotonic() + 5.0
