"""The live `gittins` scheduler (real frontend, scheduler and simulated engine processes, real
NATS and Postgres): it learns per-class index tables from finished programs in Postgres and
ranks a fresh program of a short class ahead of a fresh program of a long class, which PLAS and
ATLAS cannot tell apart (both have no service yet); the dispatch reason names the class, the
index and the effective size.

Engine: 5 ms per token, batch 1, so "who runs next" is observable. Programs expire 1 s after
their last call, which is what makes them history.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from svc_stack import WireCall, WireRecorder, db_fetch, stack_fixture
from typer.testing import CliRunner

from autellix.cli.app import build_app
from autellix.runtime.settings import Settings
from autellix.wire.protocol import CallFinal, CallRequest, SamplingParams, TokenDelta

ENGINE = "gittins-e1"


stack = stack_fixture(
    scheduler=("--policy", "gittins", "--fold-interval", "0.02", "--program-idle-ttl", "1"),
    engines={ENGINE: ("--max-batch", "1", "--token-latency", "0.005", "--report-interval", "0.03")},
)


def _req(program: str, tokens: int, cls: str) -> CallRequest:
    return CallRequest(
        program_id=program,
        prompt=f"{program}: please continue",
        sampling=SamplingParams(max_tokens=tokens),
        metadata={"autellix.class": cls},
    )


async def _dispatch_reason(db: str, call: WireCall) -> str:
    rows = await db_fetch(
        db,
        "SELECT reason FROM call_events WHERE call_id = $1 AND kind = 'dispatch'",
        call.call_id,
    )
    return rows[0]["reason"]


async def _started(db: str, call: WireCall) -> Any:
    (row,) = await db_fetch(db, "SELECT started_at FROM calls WHERE id = $1", call.call_id)
    return row["started_at"]


async def test_a_short_class_overtakes_a_long_class_once_learned(
    wire: WireRecorder, module_settings: Settings
) -> None:
    db = module_settings.database_url
    # history: 10 finished programs per class, short (6 tokens) and long (90 tokens)
    done = [wire.submit(_req(f"hist-s{i}", 6, "short")) for i in range(10)]
    done += [wire.submit(_req(f"hist-l{i}", 90, "long")) for i in range(10)]
    calls = await asyncio.gather(*done)
    await asyncio.wait_for(asyncio.gather(*(c.done.wait() for c in calls)), 120)
    deadline = time.monotonic() + 60
    while True:  # wait for them to expire (history) and for a table refresh to see them
        rows = await db_fetch(
            db, "SELECT count(*) AS n FROM programs WHERE id LIKE 'hist-%' AND status <> 'open'"
        )
        if rows[0]["n"] == 20:
            break
        assert time.monotonic() < deadline, "history programs never expired"
        await asyncio.sleep(0.3)
    await asyncio.sleep(6.0)  # > one refresh interval (5 s)
    blocker = await wire.submit(_req("new-blocker", 60, "long"))
    t0 = time.monotonic()
    while not any(isinstance(m, TokenDelta) for m in blocker.messages):
        assert time.monotonic() - t0 < 30, "blocker never streamed"
        await asyncio.sleep(0.01)
    long_call = await wire.submit(_req("new-long", 20, "long"))
    await asyncio.sleep(0.05)  # the long-class call waits first
    short_call = await wire.submit(_req("new-short", 20, "short"))
    await asyncio.wait_for(
        asyncio.gather(*(c.done.wait() for c in (blocker, long_call, short_call))), 60
    )
    for c in (long_call, short_call):
        assert isinstance(c.final, CallFinal)
    assert await _started(db, short_call) < await _started(db, long_call)
    short_reason = await _dispatch_reason(db, short_call)
    long_reason = await _dispatch_reason(db, long_call)
    assert "class short" in short_reason and "class long" in long_reason
    assert "Gittins index" in short_reason and "(class short, 10 samples)" in short_reason
    assert "effective size" in long_reason
    # `autellix calls explain` shows the labels and the index behind the level
    runner = CliRunner(env={"COLUMNS": "250"})
    args = ["calls", "explain", short_call.call_id or "", "--database-url", db]
    res = await asyncio.to_thread(runner.invoke, build_app(), args)
    assert res.exit_code == 0, res.output
    assert "short / -" in res.output and "Gittins index" in res.output
