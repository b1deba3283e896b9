"""Light engine identities (`--identities N`): one process, N engines as the rest of the system
sees them. Each registers, heartbeats and takes its own calls; the process writes all their
heartbeats in one statement per interval (Postgres transactions grow with processes, not with
identities); SIGTERM drains every identity and marks it down. `--identities` is refused on a
vLLM engine with a typed CLI error.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Callable

import pytest_asyncio
from polling import poll_until
from svc_stack import Stack, WireRecorder, db_fetch

from autellix.runtime.engine_ids import identity_ids
from autellix.wire.protocol import CallFinal, CallRequest, SamplingParams

N = 40
HOST = "lh"


@pytest_asyncio.fixture(scope="module")
async def stack(new_stack: Callable[[], Stack]) -> AsyncIterator[Stack]:
    s = new_stack()
    s.start("frontend", "frontend")
    s.start("scheduler", "scheduler")
    s.start_engine(
        HOST, "--identities", str(N), "--token-latency", "0", "--heartbeat-interval", "0.5"
    )
    async with s.running():
        yield s


async def _heartbeat_xacts(url: str) -> tuple[int, int]:
    """(commits of this database, rows of `engines` updated) so far."""
    (db,) = await db_fetch(
        url, "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
    )
    (tab,) = await db_fetch(
        url, "SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'engines'"
    )
    return int(db["xact_commit"]), int(tab["n_tup_upd"])


async def test_every_identity_serves_calls_and_heartbeats_in_one_statement(stack: Stack) -> None:
    url = stack.settings.database_url or ""
    ids = identity_ids(HOST, N)

    async def all_up() -> bool:
        rows = await db_fetch(url, "SELECT id FROM engines WHERE status = 'up'")
        return {r["id"] for r in rows} == set(ids)

    await poll_until(all_up, within_s=30.0, every_s=0.3, what="every identity registered and up")
    import nats

    nc = await nats.connect(stack.settings.nats_url or "")
    wire = await WireRecorder(nc, stack.subjects).start()
    try:
        calls = [
            await wire.submit(
                CallRequest(
                    program_id=f"lh-{i}",
                    thread_id="t",
                    prompt_token_ids=[i + 1, 2, 3],
                    sampling=SamplingParams(max_tokens=3),
                )
            )
            for i in range(3 * N)
        ]
        await asyncio.wait_for(asyncio.gather(*(c.done.wait() for c in calls)), 60.0)
    finally:
        await wire.stop()
        await nc.close()
    assert all(isinstance(c.terminal[0], CallFinal) and len(c.terminal) == 1 for c in calls)
    used = await db_fetch(url, "SELECT DISTINCT engine_id FROM calls")
    assert len(used) >= N // 2  # least-loaded spreads them over the identities

    await asyncio.sleep(1.0)  # no calls now: only heartbeats (and the reaper's checks) write
    x0, u0 = await _heartbeat_xacts(url)
    await asyncio.sleep(3.0)
    x1, u1 = await _heartbeat_xacts(url)
    rounds = 3.0 / 0.5
    assert u1 - u0 >= N * (rounds - 2)  # every identity's row, every round
    # one transaction per round for all N rows, plus the scheduler's own (a few per second)
    assert x1 - x0 < N * rounds / 4, (x1 - x0, u1 - u0)


async def test_sigterm_drains_every_identity(stack: Stack) -> None:
    url = stack.settings.database_url or ""
    await asyncio.to_thread(stack.group.stop, HOST, 60.0)
    rows = await db_fetch(url, "SELECT status, count(*) AS n FROM engines GROUP BY status")
    assert {r["status"]: r["n"] for r in rows} == {"down": N}


def test_identities_need_the_simulated_backend() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "autellix.services.engine", "--backend", "vllm", "--identities",
         "3", "--nats-url", "nats://127.0.0.1:1", "--database-url", "postgresql://x@127.0.0.1:1/x"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2 and "--identities > 1 needs --backend sim" in out.stderr
