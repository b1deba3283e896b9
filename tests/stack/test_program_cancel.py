"""Cancelling a whole program end to end: real frontend (with HTTP), scheduler and two simulated
engines of one batch slot each, real NATS and Postgres.

A program with calls running on both engines and more waiting is cancelled (NATS, HTTP, and
through `Program.close(cancel=True)`): every one of its calls gets exactly one terminal message,
`CallError(cancelled)`; its rows are `failed` / `cancelled`; both engines' slots free at once (a
call of another program that waited behind them runs now, and the heartbeats say idle).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import nats
import pytest_asyncio
from polling import poll_until
from svc_stack import Stack, WireCall, WireRecorder, db_fetch, stack_fixture

from autellix.client import Client
from autellix.wire.protocol import CallError, CallRequest, ErrorCode, SamplingParams

ENGINES = ("pcancel-e1", "pcancel-e2")
LONG = 3000  # tokens: ~30 s at 10 ms a step, far longer than any wait below


stack = stack_fixture(
    http=True, engines={e: ("--max-batch", "1", "--token-latency", "0.01") for e in ENGINES}
)


@pytest_asyncio.fixture
async def client(stack: Stack) -> AsyncIterator[Client]:
    async with Client(stack.settings.nats_url, namespace=stack.settings.namespace) as c:
        yield c


def _req(program_id: str, max_tokens: int = LONG) -> CallRequest:
    return CallRequest(
        program_id=program_id,
        prompt="cancel the tree " * 8,
        sampling=SamplingParams(max_tokens=max_tokens),
    )


async def _rows(stack: Stack, program_id: str) -> list[Any]:
    return await db_fetch(
        stack.settings.database_url,
        "SELECT id, status, error_code, engine_id FROM calls WHERE program_id = $1 ORDER BY id",
        program_id,
    )


async def _on_both_engines(stack: Stack, program_id: str) -> bool | None:
    """True once a call of the program is running on each engine (None: not yet)."""
    rows = await _rows(stack, program_id)
    return {r["engine_id"] for r in rows if r["status"] == "running"} == set(ENGINES) or None


async def _program_on_both_engines(stack: Stack, wire: WireRecorder, n: int) -> list[WireCall]:
    """A program with `n` long calls, one running on each engine and the rest waiting."""
    program_id = f"tree-{uuid.uuid4().hex[:10]}"
    calls = [await wire.submit(_req(program_id)) for _ in range(n)]
    await poll_until(
        lambda: _on_both_engines(stack, program_id), what="a call running on each engine"
    )
    return calls


def _cancelled_once(call: WireCall) -> None:
    (terminal,) = call.terminal  # exactly one terminal message on the wire
    assert isinstance(terminal, CallError) and terminal.code == ErrorCode.cancelled, terminal


async def _idle_engines(stack: Stack) -> None:
    """Both engines heartbeat `running == waiting == 0`."""
    nc = await nats.connect(stack.settings.nats_url)
    idle: set[str] = set()

    async def on_heartbeat(msg: Any) -> None:
        hb = json.loads(msg.data)
        if hb["engine_id"] in ENGINES and hb["running"] == 0 and hb["waiting"] == 0:
            idle.add(hb["engine_id"])

    sub = await nc.subscribe(stack.subjects.heartbeat, cb=on_heartbeat)
    try:

        async def both() -> bool | None:
            return idle == set(ENGINES) or None

        await poll_until(both, what="both engines idle", within_s=15.0)
    finally:
        await sub.unsubscribe()
        await nc.close()


async def _assert_program_cancelled(stack: Stack, program_id: str, calls: list[WireCall]) -> None:
    for call in calls:
        await asyncio.wait_for(call.done.wait(), 10.0)
        _cancelled_once(call)
    rows = await _rows(stack, program_id)
    assert len(rows) == len(calls)
    assert {(r["status"], r["error_code"]) for r in rows} == {("failed", "cancelled")}


async def test_program_cancel_ends_every_call_on_every_engine(
    stack: Stack, wire: WireRecorder, client: Client
) -> None:
    calls = await _program_on_both_engines(stack, wire, 4)
    program_id = calls[0].request.program_id
    assert program_id is not None
    other = await wire.submit(_req(f"other-{uuid.uuid4().hex[:8]}", max_tokens=20))

    reply = await client.cancel_program(program_id, reason="tree done")

    assert sorted(reply.cancelled) == sorted(c.call_id for c in calls if c.call_id)
    assert len(reply.cancelled) == 4 and reply.status == "open"
    await _assert_program_cancelled(stack, program_id, calls)
    # the slots were freed at once: the other program's call runs now, not after ~30 s
    await asyncio.wait_for(other.done.wait(), 15.0)
    assert other.final.usage.completion_tokens == 20
    await _idle_engines(stack)
    # repeating it is harmless and cancels nothing more
    again = await client.cancel_program(program_id)
    assert again.cancelled == []
    await asyncio.sleep(0.5)
    assert all(len(c.terminal) == 1 for c in calls)


async def test_http_program_cancel_with_close(stack: Stack, wire: WireRecorder) -> None:
    calls = await _program_on_both_engines(stack, wire, 3)
    program_id = calls[0].request.program_id
    assert stack.http_url is not None
    async with httpx.AsyncClient(base_url=stack.http_url, timeout=10.0) as http:
        resp = await http.post(f"/v1/programs/{program_id}/cancel", json={"close": True})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        unknown = await http.post("/v1/programs/no-such-program/cancel")
    assert body["status"] == "closed" and len(body["cancelled"]) == 3
    await _assert_program_cancelled(stack, str(program_id), calls)
    await _idle_engines(stack)
    assert unknown.status_code == 404, unknown.text
    # closed first: a new call of the program is refused, not run
    late = await wire.run(_req(str(program_id), max_tokens=4), wait_s=10.0)
    (err,) = late.terminal
    assert isinstance(err, CallError) and err.code == ErrorCode.program_closed


async def test_program_close_with_cancel_from_the_client(stack: Stack, client: Client) -> None:
    async with client.program() as prog:
        tasks = [
            asyncio.create_task(prog.call("stream until cancelled", max_tokens=LONG))
            for _ in range(3)
        ]
        program_id = prog.program_id
        assert program_id is not None
        await poll_until(
            lambda: _on_both_engines(stack, program_id), what="a call running on each engine"
        )
        closed = await prog.close(cancel=True)
        assert closed.status == "closed"
        results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        assert isinstance(result, Exception) and "cancelled" in str(result), result
    rows = await _rows(stack, program_id)
    assert {(r["status"], r["error_code"]) for r in rows} == {("failed", "cancelled")}
    await _idle_engines(stack)
