"""The whole stack through a real PgBouncer in transaction pooling mode
(`AUTELLIX_PG_POOL_MODE=transaction`): frontend, two schedulers and two simulated engines share
a pool of 8 server connections. Streamed calls are answered; an engine SIGKILLed mid-call is
reaped by whichever scheduler takes the transaction-scoped advisory lock, and its calls are
answered by the other engine; every service's statements went through the pooler.

Without the pool mode the services do not even connect (PgBouncer refuses asyncpg's `jit`
startup parameter), and with it on but named prepared statements left in, calls fail with
"prepared statement ... does not exist" once transactions move between server connections.
"""

from __future__ import annotations

import asyncio
import signal
import statistics
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import pytest_asyncio
from pgbouncer_proc import PgBouncer, pgbouncer_binary
from svc_stack import Stack, WireCall, WireRecorder, db_fetch

from autellix.runtime.settings import Settings
from autellix.wire.protocol import CallFinal, CallRequest, SamplingParams

pytestmark = pytest.mark.skipif(
    pgbouncer_binary() is None, reason="pgbouncer is not installed (apt-get install pgbouncer)"
)

POOLED = {"AUTELLIX_PG_POOL_MODE": "transaction"}
ENGINES = ("pgb-a", "pgb-b")
POOL_SIZE = 8  # server connections, for 5 services whose own pools hold up to 10 each
SCHED_ARGS = ("--engine-live", "1.5", "--engine-stale", "2.5", "--maintenance-interval", "0.5")


@pytest.fixture(scope="module")
def pgbouncer(pg_admin_url: str) -> Iterator[PgBouncer]:
    with PgBouncer(pg_admin_url, pool_size=POOL_SIZE) as pb:
        yield pb


@pytest.fixture(scope="module")
def direct_url(make_database: Callable[..., str]) -> str:
    """The module's database on Postgres itself (migrations need a session, not the pooler)."""
    return make_database()


@pytest_asyncio.fixture(scope="module")
async def stack(
    pgbouncer: PgBouncer,
    direct_url: str,
    namespace: str,
    nats_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stack]:
    settings = Settings(
        nats_url=nats_url, database_url=pgbouncer.url_for(direct_url), namespace=f"{namespace}_pgb"
    )
    s = Stack(settings, tmp_path_factory.mktemp("logs"))
    s.start("frontend", "frontend", env=POOLED)
    for name in ("sched-a", "sched-b"):
        s.start(name, "scheduler", "--replica", name, *SCHED_ARGS, env=POOLED)
    for e in ENGINES:
        s.start(
            e, "engine", "--engine-id", e, "--max-batch", "4", "--token-latency", "0.02",
            "--heartbeat-interval", "0.2", stop_timeout=30.0, env=POOLED,
        )  # fmt: skip
    async with s.running():
        await asyncio.sleep(0.5)
        yield s


def _req(i: int, tokens: int) -> CallRequest:
    return CallRequest(
        program_id=f"pgb-{i % 5}",
        thread_id=f"t{i}",
        prompt_token_ids=[(13 * i + k) % 900 + 1 for k in range(16)],
        sampling=SamplingParams(max_tokens=tokens),
    )


async def _all_final(calls: list[WireCall], wait_s: float = 60.0) -> None:
    await asyncio.wait_for(asyncio.gather(*(c.done.wait() for c in calls)), wait_s)
    for c in calls:
        assert isinstance(c.final, CallFinal), c.terminal


async def test_streamed_calls_through_transaction_pooling(
    wire: WireRecorder, pgbouncer: PgBouncer, direct_url: str
) -> None:
    calls = [await wire.submit(_req(i, 12)) for i in range(40)]
    await _all_final(calls)
    for c in calls:
        assert len(c.streamed_tokens()) == 12
    latency = [c.finished - c.submitted for c in calls if c.finished is not None]
    print(f"\nthrough pgbouncer: 40 calls, p50 {statistics.median(latency) * 1e3:.0f} ms")
    rows = await db_fetch(direct_url, "SELECT status, count(*) AS n FROM calls GROUP BY status")
    assert {r["status"]: r["n"] for r in rows}.get("finished", 0) >= 40, rows
    (pool,) = [p for p in pgbouncer.show("POOLS") if p["database"] != "pgbouncer"]
    assert pool["pool_mode"] == "transaction"
    servers = int(pool["sv_active"]) + int(pool["sv_idle"]) + int(pool["sv_used"])
    assert 0 < servers <= POOL_SIZE, pool  # all services share the pooler's few connections
    assert int(pool["cl_active"]) + int(pool["cl_waiting"]) > POOL_SIZE, pool
    (stats,) = [s for s in pgbouncer.show("STATS") if s["database"] != "pgbouncer"]
    assert int(stats["total_xact_count"]) > 40 * 4  # accept, dispatch, start, finish each


async def test_an_engine_lost_through_the_pooler_is_reaped(
    stack: Stack, wire: WireRecorder
) -> None:
    """The reaper's transaction-scoped advisory lock works through the pooler: a SIGKILLed
    engine's calls go to the other one."""
    calls = [await wire.submit(_req(100 + i, 60)) for i in range(8)]
    await asyncio.sleep(0.6)  # both engines are running some
    stack.group.signal(ENGINES[0], signal.SIGKILL)
    await _all_final(calls)
    survivors = {c.final.engine.engine_id for c in calls}
    assert survivors == {ENGINES[1]}, survivors
