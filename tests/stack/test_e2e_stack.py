"""End to end through real processes: frontend → scheduler → 2 simulated engines, real NATS and
Postgres. 50 programs (chats and parallel tree searches) answered exactly once on the wire, with
usage and timing recorded in Postgres; duplicate client_call_ids; per-call overhead."""

from __future__ import annotations

import asyncio
import random
import statistics
from collections import Counter

from svc_stack import Stack, WireCall, WireRecorder, db_fetch, stack_fixture

from autellix.client import Client
from autellix.runtime.settings import Settings
from autellix.wire.protocol import (
    CALL_REPLY,
    CallAccepted,
    CallFinal,
    CallRequest,
    ProgramClose,
    ProgramReply,
    SamplingParams,
    TokenDelta,
    encode,
)

ENGINES = ("e2e-a", "e2e-b")


stack = stack_fixture(engines={e: ("--max-batch", "8") for e in ENGINES})


def _req(program: str, thread: str, max_tokens: int, parents: list[str], i: int) -> CallRequest:
    return CallRequest(
        program_id=program,
        thread_id=thread,
        parent_ids=parents,
        prompt=f"{program} {thread} step {i}: " + "context " * (5 + i),
        sampling=SamplingParams(max_tokens=max_tokens),
    )


async def _chat(wire: WireRecorder, pid: str, rng: random.Random) -> list[WireCall]:
    calls, parents = [], []
    for i in range(rng.randint(3, 5)):
        c = await wire.run(_req(pid, "main", rng.randint(1, 24), parents, i))
        calls.append(c)
        parents = [c.final.call_id]
    return calls


async def _tree(wire: WireRecorder, pid: str, rng: random.Random) -> list[WireCall]:
    root = await wire.run(_req(pid, "main", rng.randint(1, 16), [], 0))
    branches = await asyncio.gather(
        *(
            wire.run(_req(pid, f"branch{b}", rng.randint(1, 16), [root.final.call_id], 1))
            for b in range(3)
        )
    )
    join = await wire.run(
        _req(pid, "main", rng.randint(1, 16), [b.final.call_id for b in branches], 2)
    )
    return [root, *branches, join]


async def test_fifty_programs_answered_exactly_once(
    stack: Stack, wire: WireRecorder, module_settings: Settings
) -> None:
    rng = random.Random(7)
    programs = [f"prog{i:02d}" for i in range(50)]
    kinds = {p: ("tree" if i % 2 else "chat") for i, p in enumerate(programs)}
    results = await asyncio.wait_for(
        asyncio.gather(
            *(
                (_tree if kinds[p] == "tree" else _chat)(wire, p, random.Random(rng.random()))
                for p in programs
            )
        ),
        timeout=180,
    )
    calls = [c for per_program in results for c in per_program]
    await asyncio.sleep(1.5)  # anything sent twice would arrive by now

    engines_used: Counter[str] = Counter()
    for c in calls:
        assert isinstance(c.messages[0], CallAccepted), c.messages[0]
        assert len(c.terminal) == 1, f"{c.call_id}: {len(c.terminal)} terminal messages"
        final = c.final
        assert final.call_id == c.call_id
        want = c.request.sampling.max_tokens
        assert final.token_ids is not None and len(final.token_ids) == want
        assert c.streamed_tokens() == final.token_ids  # the stream and the final agree
        assert final.usage.completion_tokens == want and final.usage.prompt_tokens > 0
        assert final.finish_reason == "length"
        t = final.timing
        assert t.dispatched_at and t.started_at
        assert t.accepted_at <= t.dispatched_at <= t.started_at <= t.finished_at
        assert final.engine.backend == "sim" and "simulated" in final.engine.model
        engines_used[final.engine.engine_id] += 1
    assert set(engines_used) == set(ENGINES), engines_used  # both engines got work

    ids = [c.call_id for c in calls]
    rows = await db_fetch(
        module_settings.database_url,
        """SELECT c.id, c.status, c.prompt_tokens, c.completion_tokens, c.queue_s, c.run_s,
                  c.accepted_at, c.started_at, c.finished_at, c.engine_id, c.parent_ids,
                  (SELECT count(*) FROM call_events e WHERE e.call_id = c.id AND e.kind = 'finish')
                      AS finishes,
                  (SELECT count(*) FROM call_events e
                   WHERE e.call_id = c.id AND e.kind = 'dispatch') AS dispatches
           FROM calls c WHERE c.id = ANY($1::text[])""",
        ids,
    )
    by_id = {r["id"]: r for r in rows}
    assert len(by_id) == len(calls)
    for c in calls:
        r = by_id[c.call_id]
        assert r["status"] == "finished"
        assert r["completion_tokens"] == c.request.sampling.max_tokens
        assert r["prompt_tokens"] == c.final.usage.prompt_tokens
        assert r["queue_s"] is not None and r["queue_s"] >= 0
        assert r["run_s"] is not None and r["run_s"] >= 0
        assert r["accepted_at"] <= r["started_at"] <= r["finished_at"]
        assert r["engine_id"] == c.final.engine.engine_id
        assert list(r["parent_ids"]) == list(c.request.parent_ids)
        assert r["finishes"] == 1 and r["dispatches"] == 1

    # closing a program returns its statistics, summed from its calls
    prog_calls = Counter(c.request.program_id for c in calls)
    prog_tokens = Counter()
    for c in calls:
        prog_tokens[c.request.program_id] += c.request.sampling.max_tokens
    nc = wire.nc
    for p in programs[:5]:
        msg = await nc.request(stack.subjects.program_close, encode(ProgramClose(program_id=p)))
        reply = CALL_REPLY.validate_json(msg.data)
        assert isinstance(reply, ProgramReply) and reply.status == "closed"
        assert reply.stats is not None
        assert reply.stats.calls == reply.stats.calls_finished == prog_calls[p]
        assert reply.stats.completion_tokens == prog_tokens[p]
    threads = await db_fetch(
        module_settings.database_url,
        "SELECT program_id, count(*) AS n FROM threads GROUP BY program_id",
    )
    n_threads = {r["program_id"]: r["n"] for r in threads}
    assert all(n_threads[p] == (4 if kinds[p] == "tree" else 1) for p in programs)


async def test_duplicate_client_call_id_runs_once(
    stack: Stack, wire: WireRecorder, module_settings: Settings
) -> None:
    req = CallRequest(
        program_id="dup-prog",
        client_call_id="retry-me",
        prompt="say it once",
        sampling=SamplingParams(max_tokens=12),
    )
    first = await wire.run(req)
    again = await wire.run(req)  # after the first finished: its stored result is replayed
    acc1, acc2 = first.messages[0], again.messages[0]
    assert isinstance(acc1, CallAccepted) and isinstance(acc2, CallAccepted)
    assert acc1.call_id == acc2.call_id and not acc1.duplicate and acc2.duplicate
    assert again.final.token_ids == first.final.token_ids
    assert again.final.usage == first.final.usage

    # five copies at once: one call, one run; nobody gets two answers
    burst = CallRequest(
        program_id="dup-prog",
        client_call_id="burst",
        prompt="together",
        sampling=SamplingParams(max_tokens=40),
    )
    copies = [await wire.submit(burst) for _ in range(5)]
    await asyncio.wait_for(
        asyncio.wait(
            [asyncio.create_task(c.done.wait()) for c in copies],
            return_when=asyncio.FIRST_COMPLETED,
        ),
        30,
    )
    await asyncio.sleep(1.5)
    accepted = [c.messages[0] for c in copies]
    assert all(isinstance(a, CallAccepted) for a in accepted)
    assert len({a.call_id for a in accepted}) == 1
    assert sum(not a.duplicate for a in accepted) == 1
    finals = [t for c in copies for t in c.terminal]
    assert finals and all(isinstance(f, CallFinal) for f in finals)
    assert all(len(c.terminal) <= 1 for c in copies)
    assert len({tuple(f.token_ids or []) for f in finals}) == 1
    rows = await db_fetch(
        module_settings.database_url,
        """SELECT kind, count(*) AS n FROM call_events
           WHERE call_id = $1 GROUP BY kind""",
        accepted[0].call_id,
    )
    events = {r["kind"]: r["n"] for r in rows}
    assert events.get("dispatch") == 1 and events.get("finish") == 1, events
    n = await db_fetch(
        module_settings.database_url,
        "SELECT count(*) AS n FROM calls WHERE program_id = 'dup-prog'",
    )
    assert n[0]["n"] == 2


async def test_per_call_overhead(stack: Stack, module_settings: Settings, capsys) -> None:
    """p50 latency of a 1-token call through frontend, scheduler and a zero-latency engine."""
    async with Client(module_settings.nats_url, namespace=module_settings.namespace) as c:
        async with c.program() as p:
            for _ in range(10):  # warm up connections, prepared statements, pydantic
                await p.call(prompt_token_ids=[1, 2, 3], max_tokens=1, timeout=30)
            lat = []
            for _ in range(100):
                r = await p.call(prompt_token_ids=[1, 2, 3], max_tokens=1, timeout=30)
                lat.append(r.latency_s * 1000)
    lat.sort()
    p50, p90 = statistics.median(lat), lat[89]
    with capsys.disabled():
        print(f"\n1-token call through the stack: p50 {p50:.1f} ms, p90 {p90:.1f} ms (n=100)")
    assert p50 < 1000, f"p50 {p50:.0f} ms: something on the call path is stalling"


async def test_stop_strings_end_the_call_and_never_reach_the_stream(wire: WireRecorder) -> None:
    """OpenAI `stop`: the text ends before the stop string, the tokens up to the one completing
    it are kept (and counted once), and no streamed delta ever carries any of the stop string."""

    def req(program: str, stop: list[str]) -> CallRequest:
        return CallRequest(
            program_id=program,
            thread_id="main",
            prompt="stop strings are applied by the engine service " * 3,
            sampling=SamplingParams(max_tokens=40, seed=7, stop=stop),
        )

    full = await wire.run(req("stop-full", []))
    text, tokens = full.final.text or "", full.final.token_ids or []
    words = text.split()  # the sim engine's text is " <word>" per token
    assert len(words) == 40 and full.final.finish_reason == "length"
    stop = f" {words[12]} {words[13]}"
    cut = text.index(stop)
    keep = next(k for k in range(1, 41) if stop in "".join(f" {w}" for w in words[:k]))
    stopped = await wire.run(req("stop-cut", [stop, "never appears in this output"]))
    final = stopped.final
    assert final.finish_reason == "stop"
    assert final.text == text[:cut]
    assert final.token_ids == tokens[:keep] and final.usage.completion_tokens == keep
    deltas = [m for m in stopped.messages if isinstance(m, TokenDelta)]
    assert "".join(d.text or "" for d in deltas) == final.text
    assert stopped.streamed_tokens() == tokens[:keep]
    assert all(stop not in (d.text or "") for d in deltas)


async def test_unstreamed_call_gets_only_its_final(wire: WireRecorder) -> None:
    """`stream=False` (what `Client.call` and non-streamed HTTP requests send): no TokenDelta on
    the wire, and the final alone carries every token id and the text."""

    def req(stream: bool) -> CallRequest:
        return CallRequest(
            program_id=f"unstreamed-{stream}",
            prompt="tell me everything " * 3,
            sampling=SamplingParams(max_tokens=40),
            stream=stream,
        )

    streamed, quiet = await asyncio.gather(wire.run(req(True)), wire.run(req(False)))
    assert any(isinstance(m, TokenDelta) for m in streamed.messages)
    assert [type(m) for m in quiet.messages] == [CallAccepted, CallFinal]
    assert quiet.final.token_ids is not None and len(quiet.final.token_ids) == 40
    assert quiet.final.usage.completion_tokens == 40
    assert quiet.final.text and len(quiet.final.text.split()) == 40  # the sim's word tokenizer
