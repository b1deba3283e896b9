"""A fresh deployment for one part of the cluster benchmark, and what it can be asked.

Each part gets its own namespace (subjects, streams) and database on the benchmark's servers,
the services as `autellix.local.stack.Stack` starts them, and is removed afterwards (as
`autellix.bench.stack.run_stack` does for the other benchmarks). Scheduler replicas can be
added while it runs (`add_schedulers`), so one set of engines serves several replica counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from autellix.bench.reporting import pct
from autellix.bench.stack import _delete_streams
from autellix.local.stack import Stack, StackConfig
from autellix.local.supervisor import ServiceSpec
from autellix.runtime.settings import Settings, asyncpg_dsn


@dataclass
class Deployment:
    stack: Stack
    settings: Settings
    direct_url: str  # the database on Postgres itself (the services may go through a pooler)

    def scheduler_names(self) -> list[str]:
        assert self.stack.group is not None
        return [n for n in self.stack.group.names if n.startswith("scheduler-")]

    def pids(self, prefix: str) -> list[int]:
        assert self.stack.group is not None
        return [self.stack.group[n].pid for n in self.stack.group.names if n.startswith(prefix)]

    async def add_schedulers(self, total: int, args: list[str], timeout_s: float = 120.0) -> None:
        """Start replicas until `total` run; wait for each one's ready line."""
        group = self.stack.group
        assert group is not None
        env = self.settings.to_env()
        started = []
        for i in range(len(self.scheduler_names()), total):
            name = f"scheduler-{i}"
            argv = [sys.executable, "-m", "autellix.services.scheduler", "--replica", name]
            group.start(ServiceSpec(name, [*argv, *args], env=env))
            started.append(name)
        for name in started:
            await group.wait_ready_async(name, "scheduler ready", timeout=timeout_s)


@contextlib.asynccontextmanager
async def deployment(
    nats_url: str,
    admin_url: str,
    config: StackConfig,
    *,
    pooled_url: str | None = None,
    js_replicas: int | None = None,
    tag: str = "",
    database_settings: dict[str, str] | None = None,
) -> AsyncIterator[Deployment]:
    """A fresh namespace + database + the services of `config`; all removed on exit.
    `pooled_url(db)` style: with `pooled_url` set (a URL template with `{db}`), the services
    reach the database through it (a pooler) while migrations and the benchmark's own queries go
    to Postgres directly."""
    from autellix.local.embedded import create_database, drop_database
    from autellix.store.migrate import upgrade

    tag = f"{tag}{uuid.uuid4().hex[:8]}"
    namespace, dbname = f"cl{tag}", f"autellix_cluster_{tag}"
    direct = await create_database(admin_url, dbname, settings=database_settings)
    await asyncio.to_thread(upgrade, direct)
    url = pooled_url.format(db=dbname) if pooled_url else direct
    settings = Settings(
        nats_url=nats_url, database_url=url, namespace=namespace, js_replicas=js_replicas
    )
    stack = Stack(settings, config)
    try:
        await stack.start()
        yield Deployment(stack=stack, settings=stack.settings, direct_url=direct)
    finally:
        with contextlib.suppress(Exception):
            await stack.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(drop_database(admin_url, dbname), 60)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(_delete_streams(nats_url.split(",")[0], namespace), 30)


async def dispatch_latencies(database_url: str, program_prefix: str) -> dict[str, float | int]:
    """Of the calls of programs named `<program_prefix>...`: how many were dispatched, and
    p50/p99 of accept → engine start in ms (Postgres's own clock at both ends), and of its two
    halves."""
    import asyncpg

    like = program_prefix.replace("_", r"\_") + "%"
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        rows = await conn.fetch(
            """SELECT EXTRACT(EPOCH FROM started_at - accepted_at)::float8 * 1000 AS ms,
                      EXTRACT(EPOCH FROM dispatched_at - accepted_at)::float8 * 1000 AS decide,
                      EXTRACT(EPOCH FROM started_at - dispatched_at)::float8 * 1000 AS take,
                      dispatched_at IS NOT NULL AS dispatched
               FROM calls WHERE program_id LIKE $1""",
            like,
        )
    finally:
        await conn.close()

    def of(key: str) -> list[float]:
        return [r[key] for r in rows if r[key] is not None]

    ms, decide, take = of("ms"), of("decide"), of("take")
    return {
        "calls": len(rows),
        "dispatched": sum(1 for r in rows if r["dispatched"]),
        "dispatch_p50_ms": pct(ms, 50),
        "dispatch_p99_ms": pct(ms, 99),
        # the two halves: accept -> dispatch recorded (frontend + scheduler), dispatch recorded
        # -> engine start (the Dispatch's trip and the engine taking it)
        "accept_to_dispatch_p50_ms": pct(decide, 50),
        "accept_to_dispatch_p99_ms": pct(decide, 99),
        "dispatch_to_start_p50_ms": pct(take, 50),
        "dispatch_to_start_p99_ms": pct(take, 99),
    }


def log_dir_for(base: Path | None, name: str) -> Path | None:
    return base / name if base is not None else None
