"""Servers and per-run stacks for live benchmarks.

`Infra` is the NATS + Postgres pair a whole benchmark uses: the given servers (`--nats-url`,
`--database-url`), or one throw-away embedded pair started for the benchmark. Every run then gets
a *fresh* deployment on them (`run_stack`): its own namespace (subjects and JetStream streams), its
own database (migrated from scratch), and its own service processes started with the run's
policy. Fresh per run matters: the driver's prompts are deterministic per program, so a reused
engine would serve a later run's calls from the prefix cache an earlier run filled.

The policy reaches the scheduler replicas as command-line flags (`policy_args`). If the scheduler
does not accept them yet (the live policy is being built elsewhere), the run goes ahead with the
scheduler's built-in behaviour and is marked `policy_applied: false` in the results.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from autellix.bench.engine import EngineSpec
from autellix.local.stack import EngineConfig, Stack, StackConfig
from autellix.runtime.settings import Settings, redact_url

# How the scheduler service is told its policy and engine balancer (its --help lists them).
POLICY_FLAG = "--policy"
BALANCER_FLAG = "--balancer"
# The built-in dispatcher (before program-aware scheduling) picks the least-utilized engine.
BUILTIN_BALANCER = "least-loaded"
# Policies the scheduler runs without any flag (its built-in behaviour).
BUILTIN_POLICY = "fcfs"


@functools.cache
def scheduler_help() -> str:
    """The scheduler service's --help text (read once: which flags it accepts)."""
    out = subprocess.run(
        [sys.executable, "-m", "autellix.services.scheduler", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"},
    )
    return out.stdout + out.stderr


def scheduler_accepts(flag: str) -> bool:
    """Whether the scheduler service has `flag` (a policy it cannot be told is not applied)."""
    return flag in scheduler_help()


def policy_args(policy: str, balancer: str | None = None) -> tuple[list[str], bool, str]:
    """(scheduler flags, whether the scheduler will apply `policy`, the balancer it will use).

    Without a policy flag on the scheduler, only its built-in FCFS can be honoured; without a
    balancer flag, it balances its own way (`BUILTIN_BALANCER`), which the simulator then models.
    """
    args: list[str] = []
    applied = policy == BUILTIN_POLICY
    if scheduler_accepts(POLICY_FLAG):
        args += [POLICY_FLAG, policy]
        applied = True
    used = BUILTIN_BALANCER
    if balancer and scheduler_accepts(BALANCER_FLAG):
        args += [BALANCER_FLAG, balancer]
        used = balancer
    return args, applied, used


@dataclass
class Infra:
    """NATS + Postgres for a benchmark: given URLs, or an embedded throw-away pair."""

    nats_url: str | None = None
    database_url: str | None = None  # an admin URL: per-run databases are created beside it
    _nats: object | None = field(default=None, repr=False)
    _pg: object | None = field(default=None, repr=False)

    @property
    def embedded(self) -> bool:
        return self._nats is not None or self._pg is not None

    async def start(self) -> Infra:
        from autellix.local.embedded import EmbeddedNats, EmbeddedPostgres

        if self.nats_url is None:
            nats = EmbeddedNats()
            await nats.start_async()
            self._nats, self.nats_url = nats, nats.url
        if self.database_url is None:
            pg = EmbeddedPostgres.ephemeral()
            await pg.start_async()
            self._pg, self.database_url = pg, pg.url
        return self

    async def stop(self) -> None:
        for server in (self._pg, self._nats):
            if server is not None:
                with contextlib.suppress(Exception):
                    await server.stop_async()  # type: ignore[attr-defined]
        self._pg = self._nats = None

    async def __aenter__(self) -> Infra:
        try:
            return await self.start()
        except BaseException:
            await self.stop()
            raise

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def describe(self) -> dict[str, str]:
        return {
            "nats": (self.nats_url or "?") + (" (embedded)" if self._nats else ""),
            "postgres": redact_url(self.database_url or "?") + (" (embedded)" if self._pg else ""),
        }


@dataclass
class RunStack:
    """One started deployment: the stack, its settings and what it was started with."""

    stack: Stack
    settings: Settings
    policy: str
    policy_applied: bool
    balancer: str
    scheduler_args: list[str]
    start_s: float
    database: str


async def _delete_streams(nats_url: str, namespace: str) -> None:
    import nats

    nc = await nats.connect(nats_url, connect_timeout=5, max_reconnect_attempts=0)
    try:
        js = nc.jetstream()
        for info in await js.streams_info():
            name = info.config.name or ""
            if name.lower().startswith(namespace.lower() + "_"):
                with contextlib.suppress(Exception):
                    await js.delete_stream(name)
    finally:
        await nc.close()


@contextlib.asynccontextmanager
async def run_stack(
    infra: Infra,
    *,
    policy: str,
    timing: EngineSpec,
    engines: int = 1,
    schedulers: int = 1,
    balancer: str | None = None,
    extra_scheduler_args: list[str] | None = None,
    log_dir: Path | None = None,
    ready_timeout_s: float = 180.0,
    http_port: int | None = None,
) -> AsyncIterator[RunStack]:
    """A fresh namespace + database + services with `policy`; everything removed on exit.
    `http_port`: the frontend also serves its HTTP API (and the `/ui` dashboard) there."""
    from autellix.local.embedded import create_database, drop_database

    assert infra.nats_url and infra.database_url, "start the Infra first"
    tag = uuid.uuid4().hex[:10]
    namespace = f"bench{tag}"
    dbname = f"autellix_bench_{tag}"
    args, applied, used_balancer = policy_args(policy, balancer)
    args += list(extra_scheduler_args or [])
    t0 = time.monotonic()
    db_url = await create_database(infra.database_url, dbname)
    settings = Settings(nats_url=infra.nats_url, database_url=db_url, namespace=namespace)
    config = StackConfig(
        engines=[
            EngineConfig(timing.backend, timing.max_batch, tuple(timing.engine_args()))
            for _ in range(engines)
        ],
        schedulers=schedulers,
        scheduler_args=args,
        log_dir=(log_dir / f"{policy}-{tag}") if log_dir else None,
        ready_timeout_s=ready_timeout_s,
        http_port=http_port,
    )
    stack = Stack(settings, config)
    try:
        await stack.start()
        yield RunStack(
            stack=stack,
            settings=stack.settings,
            policy=policy,
            policy_applied=applied,
            balancer=used_balancer,
            scheduler_args=args,
            start_s=time.monotonic() - t0,
            database=dbname,
        )
    finally:
        with contextlib.suppress(Exception):
            await stack.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(drop_database(infra.database_url, dbname), 60)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(_delete_streams(infra.nats_url, namespace), 30)
