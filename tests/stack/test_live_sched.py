"""Live Autellix scheduling through real processes (frontend, ATLAS scheduler, one simulated
engine with a batch of 1), real NATS and Postgres: program-level ordering, preemption with an
uninterrupted resumed stream, demotion at a quantum, anti-starvation promotion, the explain CLI,
program expiry.

One stack for the module. Engine: 10 ms per token, batch 1, so "who runs next" is observable.
Scheduler: ATLAS, quanta 32/64/128/256 tokens, beta 3, runs younger than 4 tokens protected,
reports folded every 20 ms. Each test uses its own programs; their timings are chosen so that the
anti-starvation rule (wait >= 3 x service time) cannot fire except in its own test.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from svc_stack import WireCall, WireRecorder, db_fetch, stack_fixture
from typer.testing import CliRunner

from autellix.backends.base import GenerationRequest
from autellix.backends.sim import SimulatedBackend
from autellix.cli.app import build_app
from autellix.runtime.settings import Settings
from autellix.wire.protocol import (
    CALL_REPLY,
    CallFinal,
    CallRequest,
    ProgramClose,
    ProgramReply,
    SamplingParams,
    TokenDelta,
    encode,
)

ENGINE = "live-e1"
TOKEN_S = 0.01
BOUNDS = (32, 64, 128, 256)


stack = stack_fixture(
    scheduler=(
        *("--policy", "atlas", "--quantum", "32", "--levels", "5", "--beta", "3"),
        *("--min-run-tokens", "4", "--fold-interval", "0.02", "--starvation-interval", "0.2"),
        *("--program-idle-ttl", "2"),
    ),
    engines={
        ENGINE: ("--max-batch", "1", "--token-latency", str(TOKEN_S), "--report-interval", "0.03")
    },
)


def _req(program: str, tokens: int, thread: str = "main", tag: str = "") -> CallRequest:
    return CallRequest(
        program_id=program,
        thread_id=thread,
        prompt=f"{program} {thread} {tag}: please continue",
        sampling=SamplingParams(max_tokens=tokens),
    )


async def _row(db: str, call: WireCall) -> Any:
    (row,) = await db_fetch(db, "SELECT * FROM calls WHERE id = $1", call.call_id)
    return row


async def _events(db: str, call: WireCall) -> list[Any]:
    return await db_fetch(
        db, "SELECT * FROM call_events WHERE call_id = $1 ORDER BY at, id", call.call_id
    )


async def _until_streaming(call: WireCall, wait_s: float = 20.0) -> None:
    deadline = time.monotonic() + wait_s
    while not any(isinstance(m, TokenDelta) for m in call.messages):
        assert time.monotonic() < deadline, "no tokens streamed"
        await asyncio.sleep(0.01)


async def _done(*calls: WireCall, wait_s: float = 60.0) -> None:
    await asyncio.wait_for(asyncio.gather(*(c.done.wait() for c in calls)), wait_s)
    for c in calls:
        assert isinstance(c.final, CallFinal)


async def _service(wire: WireRecorder, program: str, tokens: int) -> None:
    """Give `program` `tokens` of attained service (one finished call)."""
    c = await wire.run(_req(program, tokens, tag="history"), wait_s=60)
    assert c.final.usage.completion_tokens == tokens


async def test_low_service_program_overtakes_queued_high_service_call(
    wire: WireRecorder, module_settings: Settings
) -> None:
    db = module_settings.database_url
    await _service(wire, "ord-heavy", 60)  # ATLAS service 60: its next call enters level 1
    blocker = await wire.submit(_req("ord-blocker", 30))
    await _until_streaming(blocker)
    heavy = await wire.submit(_req("ord-heavy", 10, tag="second"))
    await asyncio.sleep(0.05)  # heavy is queued at the engine first
    light = await wire.submit(_req("ord-light", 10))
    await _done(blocker, heavy, light)
    h, li = await _row(db, heavy), await _row(db, light)
    assert li["level"] == 0
    assert h["accepted_at"] < li["accepted_at"]
    assert li["started_at"] < h["started_at"], "the low-service program's call should run first"
    assert h["preemptions"] == 0 and li["preemptions"] == 0  # it overtook in the queue
    (dispatch,) = [e for e in await _events(db, heavy) if e["kind"] == "dispatch"]
    assert "base 60 " in dispatch["reason"] and dispatch["level"] == 1
    assert dispatch["value"] == pytest.approx(60)


async def test_running_call_is_preempted_and_resumed_as_one_stream(
    wire: WireRecorder, module_settings: Settings
) -> None:
    db = module_settings.database_url
    await _service(wire, "pre-heavy", 50)
    victim = await wire.submit(_req("pre-heavy", 150, tag="long"))
    await _until_streaming(victim)
    await asyncio.sleep(0.15)  # well past the 4-token protection
    light = await wire.submit(_req("pre-light", 20))
    await _done(victim, light)
    final = victim.final
    assert final.preemptions >= 1
    assert light.finished is not None and victim.finished is not None
    assert light.finished < victim.finished
    # exactly max_tokens, streamed once by offset, identical to an uninterrupted run
    tokens = victim.streamed_tokens()  # asserts no gap and no differing replay
    assert tokens == final.token_ids and len(tokens) == 150
    assert final.usage.completion_tokens == 150
    deltas = [m for m in victim.messages if isinstance(m, TokenDelta)]
    assert sum(len(d.token_ids) for d in deltas) == 150  # no token sent twice
    b = SimulatedBackend()
    expect: list[int] = []
    prompt = victim.request.prompt or ""
    async for chunk in b.generate(GenerationRequest("x", b.tokenize(prompt), 150)):
        expect += chunk.token_ids
    await b.stop()
    assert tokens == expect  # resumed from its own tokens: nothing regenerated differently
    row = await _row(db, victim)
    assert row["service"] == pytest.approx(150) and row["completion_tokens"] == 150
    preempts = [e for e in await _events(db, victim) if e["kind"] == "preempt"]
    assert preempts and preempts[0]["other_call_id"] == light.call_id
    assert "waiting at a full batch" in preempts[0]["reason"]
    (p,) = await db_fetch(db, "SELECT * FROM programs WHERE id = 'pre-heavy'")
    assert p["completion_tokens"] == 200 and p["total_service"] == pytest.approx(200)
    assert p["attained"] == pytest.approx(200)  # each token counted once


async def test_demotion_when_a_call_crosses_its_quantum(
    wire: WireRecorder, module_settings: Settings
) -> None:
    db = module_settings.database_url
    call = await wire.run(_req("dem-prog", 100), wait_s=60)
    assert call.final.level == 2  # value 100: [64, 128)
    demotes = [e for e in await _events(db, call) if e["kind"] == "demote"]
    assert [e["level"] for e in demotes] == [1, 2]
    for e, bound in zip(demotes, BOUNDS, strict=False):
        assert e["value"] >= bound  # demoted once its value reached the queue's upper bound
        assert e["value"] < bound + 30  # ... promptly (reports are folded every ~20-50 ms)
        assert "quantum used" in e["reason"]
    (t,) = await db_fetch(
        db, "SELECT service FROM threads WHERE program_id = 'dem-prog' AND thread_id = 'main'"
    )
    assert t["service"] == pytest.approx(100)


async def test_anti_starvation_promotes_a_waiting_call(
    wire: WireRecorder, module_settings: Settings
) -> None:
    db = module_settings.database_url
    await _service(wire, "stv-heavy", 50)  # T_p ~ 0.5 s: promoted after waiting ~1.5 s
    blocker = await wire.submit(_req("stv-blocker", 25))
    await _until_streaming(blocker)
    starving = await wire.submit(_req("stv-heavy", 5, tag="starving"))
    await asyncio.sleep(0.05)
    stream = [await wire.submit(_req(f"stv-light-{i}", 25)) for i in range(14)]
    await _done(blocker, starving, *stream, wait_s=90)
    row = await _row(db, starving)
    starts = [(await _row(db, c))["started_at"] for c in stream]
    assert row["started_at"] < max(starts), "the starving call waited for the whole stream"
    promotes = [e for e in await _events(db, starving) if e["kind"] == "promote"]
    assert len(promotes) == 1 and promotes[0]["level"] == 0
    assert "anti-starvation" in promotes[0]["reason"] and ">= beta 3" in promotes[0]["reason"]
    assert row["reset_at"] is not None  # its W_c and T_c restarted at the promotion
    waited = (row["started_at"] - row["accepted_at"]).total_seconds()
    assert waited >= 1.0  # not before the ratio rule allows (3 x ~0.5 s of service)


async def test_explain_cli_prints_the_history(
    wire: WireRecorder, module_settings: Settings
) -> None:
    call = await wire.run(_req("cli-prog", 40), wait_s=60)
    app, db = build_app(), module_settings.database_url

    async def cli(*args: str) -> Any:  # the CLI runs its own event loop: off this one
        runner = CliRunner(env={"COLUMNS": "200"})
        return await asyncio.to_thread(runner.invoke, app, [*args, "--database-url", db])

    res = await cli("calls", "explain", call.call_id or "")
    assert res.exit_code == 0, res.output
    assert "dispatch" in res.output and "demote" in res.output and "finish" in res.output
    assert "quantum used" in res.output
    res = await cli("calls", "explain", (call.call_id or "")[:-3], "--json")  # a unique prefix
    data = json.loads(res.output)
    assert [e["kind"] for e in data["events"]] == ["dispatch", "demote", "finish"]
    assert data["call"]["id"] == call.call_id and data["call"]["level"] == 1
    res = await cli("programs", "show", "cli-prog")
    assert res.exit_code == 0 and (call.call_id or "") in res.output, res.output
    # prefix-cache hits per program: a follow-up whose prompt extends an earlier one (the same
    # program stays on its engine) is served 64 of its 80 prompt tokens from the cache
    history = list(range(100, 164))
    for ids in (history, [*history, *range(500, 516)]):
        req = CallRequest(
            program_id="cli-cache", prompt_token_ids=ids, sampling=SamplingParams(max_tokens=4)
        )
        await wire.run(req, wait_s=60)
    res = await cli("programs", "show", "cli-cache", "--json")
    cache = json.loads(res.output)["prefix_cache"]
    assert cache == {"prompt_tokens": 144, "cached_tokens": 64, "hit_rate": 64 / 144}
    res = await cli("programs", "show", "cli-cache")
    assert "64 / 144 (44%)" in res.output and "64/80" in res.output, res.output
    res = await cli("calls", "explain", "c-nope")
    assert res.exit_code == 1


async def test_idle_program_expires_and_keeps_its_statistics(
    wire: WireRecorder, module_settings: Settings
) -> None:
    db = module_settings.database_url
    await wire.run(_req("ttl-prog", 7), wait_s=60)
    deadline = time.monotonic() + 20
    while True:
        (p,) = await db_fetch(db, "SELECT * FROM programs WHERE id = 'ttl-prog'")
        if p["status"] != "open":
            break
        assert time.monotonic() < deadline, "program never expired"
        await asyncio.sleep(0.3)
    assert p["status"] == "expired" and p["closed_at"] is not None
    assert p["calls_total"] == 1 and p["calls_finished"] == 1 and p["completion_tokens"] == 7
    refused = await wire.run(_req("ttl-prog", 3, tag="late"), wait_s=30)
    (err,) = refused.terminal
    assert getattr(err, "code", None) == "program_closed"
    # the client closing it late gets the final statistics, and it stays expired
    msg = await wire.nc.request(
        wire.subjects.program_close, encode(ProgramClose(program_id="ttl-prog")), timeout=10
    )
    reply = CALL_REPLY.validate_json(msg.data)
    assert isinstance(reply, ProgramReply) and reply.status == "expired"
    assert reply.stats is not None and reply.stats.completion_tokens == 7
    assert reply.stats.calls == 1 and reply.stats.service == pytest.approx(7)
