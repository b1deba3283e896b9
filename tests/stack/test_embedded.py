"""Embedded NATS/Postgres (the `autellix up` default), settings resolution and URL forms.

These tests start their *own* embedded servers (separate from the session fixtures), because
they check lifecycle: clean stop, no leftover processes or lock files, restart on the same data.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import nats
import pytest

from autellix.local.embedded import (
    EmbeddedNats,
    EmbeddedPostgres,
    create_database,
    drop_database,
    find_nats_server,
)
from autellix.runtime.settings import (
    DEFAULT_NAMESPACE,
    ENV_DATABASE_URL,
    ENV_NAMESPACE,
    ENV_NATS_URL,
    Settings,
    asyncpg_dsn,
    database_name,
    redact_url,
    resolve,
    sqlalchemy_url,
    with_database,
)


def process_alive(pid: int) -> bool:
    """Alive and not a zombie (orphans may stay zombies where PID 1 does not reap)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while process_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short temp dir under /tmp: socket paths must stay short, and pytest's tmp_path is 0700
    (the embedded Postgres runs as another user when the tests run as root)."""
    path = Path(tempfile.mkdtemp(prefix="autellix-t-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------- NATS


def test_find_nats_server_is_the_wheel_binary() -> None:
    path = Path(find_nats_server())
    assert path.name == "nats-server"
    assert os.access(path, os.X_OK)


async def test_embedded_nats_jetstream_usable_and_stops_clean() -> None:
    server = EmbeddedNats()
    await server.start_async()
    pid, data_dir, port = server.pid, server.data_dir, server.port
    assert pid is not None and data_dir is not None and port is not None
    assert server.url == f"nats://127.0.0.1:{port}"
    try:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await js.add_stream(name="EMB_T", subjects=["emb.t.>"])
        acks = [await js.publish("emb.t.x", f"m{i}".encode()) for i in range(3)]
        assert [a.seq for a in acks] == [1, 2, 3]
        kv = await js.create_key_value(bucket="emb_kv")
        await kv.put("k", b"v")
        assert (await kv.get("k")).value == b"v"
        await nc.close()
    finally:
        await server.stop_async()
    assert wait_gone(pid, 5)
    assert not data_dir.exists(), "ephemeral JetStream store must be removed"
    assert not port_open("127.0.0.1", port)
    assert server.pid is None


def test_embedded_nats_persistent_store_survives_restart(short_tmp: Path) -> None:
    async def publish(url: str) -> None:
        nc = await nats.connect(url)
        js = nc.jetstream()
        await js.add_stream(name="EMB_P", subjects=["emb.p"])
        await js.publish("emb.p", b"kept")
        await nc.close()

    async def read(url: str) -> bytes:
        nc = await nats.connect(url)
        js = nc.jetstream()
        msg = await js.get_msg("EMB_P", 1)
        await nc.close()
        return msg.data or b""

    with EmbeddedNats(short_tmp / "nats") as first:
        asyncio.run(publish(first.url))
        first_pid = first.pid
    assert first_pid is not None and wait_gone(first_pid, 5)
    assert not list((short_tmp / "nats").glob("*.ports")), "ports file left behind"
    with EmbeddedNats(short_tmp / "nats") as second:
        assert asyncio.run(read(second.url)) == b"kept"


def test_embedded_nats_stops_when_its_owner_is_sigkilled() -> None:
    script = (
        "import time; from autellix.local.embedded import EmbeddedNats; "
        "n = EmbeddedNats().start(); print(n.pid, n.data_dir, flush=True); time.sleep(600)"
    )
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert owner.stdout is not None
    pid, data_dir = owner.stdout.readline().split()
    owner.kill()  # no cleanup code runs in the owner
    owner.wait()
    assert wait_gone(int(pid), 10), "nats-server outlived its owner"
    assert Path(data_dir).exists()
    with EmbeddedNats():  # the next ephemeral server sweeps temp dirs of dead owners
        assert not Path(data_dir).exists()


def test_embedded_nats_start_failure_is_reported(short_tmp: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = EmbeddedNats(short_tmp / "n", port=port, startup_timeout=10)
        with pytest.raises(RuntimeError, match=r"exited|not ready"):
            server.start()
    assert server.pid is None


# --------------------------------------------------------------------------- Postgres


async def _query(url: str, sql: str) -> object:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


async def _execute(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def test_embedded_postgres_restart_on_same_data_dir(short_tmp: Path) -> None:
    pgdata = short_tmp / "pgdata"
    pg = EmbeddedPostgres(pgdata, durable=False)
    pg.start()
    pid = pg.pid
    assert pid is not None
    try:
        assert pg.url.startswith("postgresql://postgres@/postgres?host=/")
        asyncio.run(_execute(pg.url, "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('x')"))
        assert asyncio.run(_query(pg.url, "SELECT v FROM kept")) == "x"
    finally:
        pg.stop()
    assert wait_gone(pid, 5)
    assert not (pgdata / "postmaster.pid").exists(), "stale postmaster.pid after stop"
    assert pg.socket_dir is not None and not list(pg.socket_dir.glob(".s.PGSQL*"))

    with EmbeddedPostgres(pgdata, durable=False) as again:
        assert again.pid != pid
        assert asyncio.run(_query(again.url, "SELECT v FROM kept")) == "x"
    assert not (pgdata / "postmaster.pid").exists()


OWNER_SCRIPT = """
import sys, time
from autellix.local.embedded import EmbeddedPostgres
pg = EmbeddedPostgres(sys.argv[1], durable=False).start()
print(pg.pid, flush=True)
time.sleep(600)
"""


def start_owner_process(pgdata: Path) -> tuple[subprocess.Popen[str], int]:
    """Run an EmbeddedPostgres owner in another process (as `autellix up` would); return it and
    the postmaster pid."""
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER_SCRIPT, str(pgdata)], stdout=subprocess.PIPE, text=True
    )
    assert owner.stdout is not None
    line = owner.stdout.readline()
    assert line.strip().isdigit(), f"owner failed: {line!r}"
    return owner, int(line)


def test_embedded_postgres_stops_when_its_owner_is_sigkilled(short_tmp: Path) -> None:
    pgdata = short_tmp / "pgdata"
    owner, postmaster = start_owner_process(pgdata)
    owner.kill()  # `autellix up` killed with SIGKILL: no cleanup code runs in it
    owner.wait()
    assert wait_gone(postmaster, 15), "postmaster outlived its owner"
    assert not (pgdata / "postmaster.pid").exists(), "fast shutdown should remove its lock"


def test_embedded_postgres_recovers_from_killed_server_and_reused_pid(short_tmp: Path) -> None:
    pgdata = short_tmp / "pgdata"
    owner, postmaster = start_owner_process(pgdata)
    os.kill(postmaster, signal.SIGKILL)  # everything dies hard: lock files stay behind
    owner.kill()
    owner.wait()
    assert wait_gone(postmaster, 5)
    assert (pgdata / "postmaster.pid").exists()
    # Even when the pid recorded in the lock file now belongs to another live process (here: us,
    # as after a container restart), starting on the same data dir must work.
    lines = (pgdata / "postmaster.pid").read_text().splitlines()
    lines[0] = str(os.getpid())
    (pgdata / "postmaster.pid").write_text("\n".join(lines) + "\n")
    with EmbeddedPostgres(pgdata, durable=False) as pg:
        assert asyncio.run(_query(pg.url, "SELECT 1")) == 1
    assert not (pgdata / "postmaster.pid").exists()


def test_embedded_postgres_adopts_running_server(short_tmp: Path) -> None:
    pgdata = short_tmp / "pgdata"
    with EmbeddedPostgres(pgdata, durable=False) as owner:
        other = EmbeddedPostgres(pgdata, durable=False).start()
        assert other.adopted_pid == owner.pid
        assert other.url == owner.url
        other.stop()  # not ours: must leave it running
        assert process_alive(owner.pid or 0)
        assert asyncio.run(_query(owner.url, "SELECT 2")) == 2


def test_ephemeral_postgres_under_a_long_tmpdir(monkeypatch: pytest.MonkeyPatch) -> None:
    """A newcomer's $TMPDIR can be long enough that a socket beside the data directory (or in
    $TMPDIR) exceeds sun_path: the server still starts, its socket in a short temp root."""
    long_tmp = Path(tempfile.mkdtemp(prefix="autellix-t-")) / ("long-" * 20).rstrip("-")
    long_tmp.mkdir()
    long_tmp.parent.chmod(0o755)
    long_tmp.chmod(0o777)  # the embedded Postgres may run as its own OS user
    monkeypatch.setattr(tempfile, "tempdir", str(long_tmp))
    try:
        with EmbeddedPostgres.ephemeral() as pg:
            assert str(pg.pgdata).startswith(str(long_tmp))
            assert pg.socket_dir is not None and len(str(pg.socket_dir)) < 90
            assert asyncio.run(_query(pg.url, "SELECT 3")) == 3
            socket_dir = pg.socket_dir
        assert not socket_dir.exists()
    finally:
        shutil.rmtree(long_tmp.parent, ignore_errors=True)


def test_ephemeral_postgres_removes_everything() -> None:
    with EmbeddedPostgres.ephemeral() as pg:
        base = pg.pgdata.parent
        assert asyncio.run(_query(pg.url, "SHOW fsync")) == "off"
        pid = pg.pid
    assert pid is not None and wait_gone(pid, 5)
    assert not base.exists()


async def test_create_and_drop_database(pg_admin_url: str, run_id: str) -> None:
    name = f"autellix_test_{run_id}_cd"
    url = await create_database(pg_admin_url, name)
    assert database_name(url) == name
    assert await create_database(pg_admin_url, name) == url  # exist_ok
    with pytest.raises(ValueError, match="already exists"):
        await create_database(pg_admin_url, name, exist_ok=False)
    holder = await asyncpg.connect(asyncpg_dsn(url))  # an open session must not block the drop
    await drop_database(pg_admin_url, name)
    assert holder.is_closed() or not await _still_usable(holder)
    count = f"SELECT count(*) FROM pg_database WHERE datname = '{name}'"
    assert await _query(asyncpg_dsn(pg_admin_url), count) == 0
    with pytest.raises(ValueError):
        await create_database(pg_admin_url, 'bad"name')


async def _still_usable(conn: asyncpg.Connection) -> bool:
    try:
        await conn.fetchval("SELECT 1")
        return True
    except (asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError, OSError):
        return False
    finally:
        await conn.close()


async def test_namespace_cleanup_deletes_only_its_streams(nats_url: str, namespace: str) -> None:
    """The ``namespace`` fixture's end-of-session cleanup, run on a sub-prefix of our own."""
    from conftest import delete_namespace_streams

    prefix = f"{namespace}_cleanup"
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await js.add_stream(name=f"{prefix}_calls", subjects=[f"{prefix}.calls.>"])
        await js.add_stream(name=f"{prefix.upper()}_UP", subjects=[f"{prefix}.up.>"])
        await js.create_key_value(bucket=f"{prefix}_programs")
        await js.add_stream(name=f"{namespace}_keep", subjects=[f"{namespace}.keep.>"])
        deleted = await delete_namespace_streams(nats_url, prefix)
        assert sorted(deleted) == sorted(
            [f"{prefix}_calls", f"{prefix.upper()}_UP", f"KV_{prefix}_programs"]
        )
        names = {info.config.name for info in await js.streams_info()}
        assert f"{namespace}_keep" in names and not names & set(deleted)
    finally:
        await nc.close()


async def test_session_database_is_migrated(database_url: str) -> None:
    tables = await _query(
        asyncpg_dsn(database_url),
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'alembic_version'",
    )
    assert tables == 1


# --------------------------------------------------------------------------- settings, URLs


def test_resolve_prefers_flags_then_env_then_defaults() -> None:
    env = {ENV_NATS_URL: "nats://env:4222", ENV_DATABASE_URL: "postgresql://e@h/db"}
    s = resolve(environ=env)
    assert s == Settings("nats://env:4222", "postgresql://e@h/db", DEFAULT_NAMESPACE)
    s = resolve(nats_url="nats://flag:1", environ={**env, ENV_NAMESPACE: "ns_1"})
    assert (s.nats_url, s.namespace) == ("nats://flag:1", "ns_1")
    empty = resolve(environ={})
    assert empty.namespace == DEFAULT_NAMESPACE
    assert empty.needs_embedded_nats and empty.needs_embedded_postgres
    with pytest.raises(ValueError, match="--nats-url"):
        empty.require()
    assert empty.with_urls("nats://a:1", "postgresql://b/c").to_env() == {
        ENV_NATS_URL: "nats://a:1",
        ENV_DATABASE_URL: "postgresql://b/c",
        ENV_NAMESPACE: DEFAULT_NAMESPACE,
    }
    for bad in ("a.b", "x*", "has space", "x" * 65):
        with pytest.raises(ValueError, match="namespace"):
            resolve(namespace=bad, environ={})


@pytest.mark.parametrize(
    ("given", "sa", "pg"),
    [
        (
            "postgresql://postgres@127.0.0.1:5432/test",
            "postgresql+asyncpg://postgres@127.0.0.1:5432/test",
            "postgresql://postgres@127.0.0.1:5432/test",
        ),
        (
            "postgres://u:p%40ss@db:5433/x?sslmode=disable",
            "postgresql+asyncpg://u:p%40ss@db:5433/x?sslmode=disable",
            "postgresql://u:p%40ss@db:5433/x?sslmode=disable",
        ),
        (
            "postgresql+psycopg://postgres@/postgres?host=/tmp/s d",
            "postgresql+asyncpg://postgres@/postgres?host=/tmp/s d",
            "postgresql://postgres@/postgres?host=/tmp/s d",
        ),
        (
            "postgresql://postgres@%2Ftmp%2Fsock:5433/db",
            "postgresql+asyncpg://postgres@/db?host=/tmp/sock&port=5433",
            "postgresql://postgres@/db?host=/tmp/sock&port=5433",
        ),
    ],
)
def test_url_forms(given: str, sa: str, pg: str) -> None:
    assert sqlalchemy_url(given) == sa
    assert asyncpg_dsn(given) == pg
    assert sqlalchemy_url(sqlalchemy_url(given)) == sa  # idempotent


def test_url_helpers() -> None:
    with pytest.raises(ValueError, match="not a PostgreSQL URL"):
        sqlalchemy_url("mysql://x/y")
    assert with_database("postgresql://u@/a?host=/s", "b") == "postgresql://u@/b?host=/s"
    assert database_name("postgresql+asyncpg://u@h:1/some_db") == "some_db"
    assert redact_url("postgresql://u:secret@h/db") == "postgresql://u:***@h/db"
    assert redact_url("postgresql://u@h/db") == "postgresql://u@h/db"


async def test_sqlalchemy_reaches_unix_socket_url() -> None:
    """The Unix-socket URL the embedded server hands out works through SQLAlchemy + asyncpg."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    async with EmbeddedPostgres.ephemeral() as pg:
        assert "?host=/" in pg.url
        engine = create_async_engine(sqlalchemy_url(pg.url))
        try:
            async with engine.connect() as conn:
                assert (await conn.execute(text("SELECT 40 + 2"))).scalar() == 42
        finally:
            await engine.dispose()
