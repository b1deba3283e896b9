"""Cancelling calls end to end through real processes (frontend with HTTP, scheduler, one
simulated engine with one batch slot), real NATS and Postgres: a queued call that then never
runs, a running call whose stream stops and whose slot frees, a call waiting inside the engine,
repeats and cancels after the end, an HTTP client that disconnects (streamed and not), and a
Python client task that is cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import nats
import pytest
import pytest_asyncio
from polling import poll_until
from svc_stack import Stack, WireCall, WireRecorder, db_fetch

from autellix.client import CallFailed, Client
from autellix.runtime.settings import Settings, asyncpg_dsn
from autellix.store.dispatch import DispatchItem, mark_dispatched_many
from autellix.wire.protocol import (
    CallError,
    CallFinal,
    CallRequest,
    ErrorCode,
    SamplingParams,
    TokenDelta,
)

ENGINE = "cancel-e1"
LONG = 3000  # tokens: ~30 s at 10 ms per step, far longer than any wait below


@pytest_asyncio.fixture(scope="module")
async def stack(new_stack: Callable[[], Stack]) -> AsyncIterator[Stack]:
    """Frontend (+ HTTP) and scheduler only: the engine comes with the `engine` fixture, so
    the first test sees calls stay `queued`."""
    s = new_stack()
    s.start_frontend(http=True)
    s.start("scheduler", "scheduler")
    async with s.running():
        yield s


@pytest_asyncio.fixture(scope="module")
async def engine(stack: Stack) -> AsyncIterator[str]:
    stack.start_engine(ENGINE, "--max-batch", "1", "--token-latency", "0.01")
    await stack.wait_ready(ENGINE)
    yield ENGINE


@pytest_asyncio.fixture
async def client(stack: Stack) -> AsyncIterator[Client]:
    async with Client(stack.settings.nats_url, namespace=stack.settings.namespace) as c:
        yield c


def _req(max_tokens: int, client_call_id: str | None = None) -> CallRequest:
    return CallRequest(
        program_id=f"cx-{uuid.uuid4().hex[:10]}",
        prompt="cancel me " * 8,
        client_call_id=client_call_id,
        sampling=SamplingParams(max_tokens=max_tokens),
    )


async def _accepted(call: WireCall) -> str:
    async def got() -> str | None:
        return call.call_id

    return await poll_until(got, what="CallAccepted")


async def _row(settings: Settings, call_id: str) -> Any:
    (row,) = await db_fetch(
        settings.database_url,
        "SELECT status, error_code, completion_tokens, control_seq FROM calls WHERE id = $1",
        call_id,
    )
    return row


async def _status_is(settings: Settings, call_id: str, status: str) -> bool:
    return (await _row(settings, call_id))["status"] == status


async def _events(settings: Settings, call_id: str) -> list[str]:
    rows = await db_fetch(
        settings.database_url,
        "SELECT kind FROM call_events WHERE call_id = $1 ORDER BY at, id",
        call_id,
    )
    return [r["kind"] for r in rows]


def _deltas(call: WireCall) -> int:
    return sum(isinstance(m, TokenDelta) for m in call.messages)


def _only_error(call: WireCall) -> CallError:
    (t,) = call.terminal
    assert isinstance(t, CallError), t
    return t


# --------------------------------------------------------------------------- no engine yet


async def test_cancel_queued_call_never_runs(
    stack: Stack, wire: WireRecorder, client: Client, module_settings: Settings
) -> None:
    a = await wire.submit(_req(8))
    key = f"k-{uuid.uuid4().hex[:8]}"
    b_req = _req(8, client_call_id=key)
    b = await wire.submit(b_req)
    a_id, b_id = await _accepted(a), await _accepted(b)
    assert await _status_is(module_settings, a_id, "queued")  # no engine: stays queued

    reply = await client.cancel(a_id, reason="changed my mind")
    assert (reply.outcome, reply.was, reply.status) == ("cancelled", "queued", "failed")
    # by the caller's idempotency key (what a caller has before CallAccepted arrives)
    by_key = await client.cancel(program_id=b_req.program_id, client_call_id=key)
    assert (by_key.outcome, by_key.call_id, by_key.was) == ("cancelled", b_id, "queued")

    await asyncio.wait_for(asyncio.gather(a.done.wait(), b.done.wait()), 10)
    err = _only_error(a)
    assert err.code == ErrorCode.cancelled and err.call_id == a_id
    assert "changed my mind" in err.message
    assert _only_error(b).code == ErrorCode.cancelled

    again = await client.cancel(a_id)
    assert (again.outcome, again.status) == ("already_cancelled", "failed")
    unknown = await client.cancel("no-such-call")
    assert unknown.outcome == "unknown" and unknown.status is None

    # the scheduler's dispatch transition is conditional on `queued`: a cancelled call can
    # never be handed to an engine, even by a scheduler that decided before the cancel
    import asyncpg

    conn = await asyncpg.connect(asyncpg_dsn(module_settings.database_url))
    try:
        moved = await mark_dispatched_many(
            conn,
            [
                DispatchItem(
                    call_id=a_id, attempt=0, engine_id=ENGINE, level=0, priority=0.0, reason="t"
                )
            ],
            actor="test",
        )
    finally:
        await conn.close()
    assert moved == {}
    row = await _row(module_settings, a_id)
    assert (row["status"], row["error_code"], row["control_seq"]) == ("failed", "cancelled", 1)


async def test_cancelled_queued_calls_stay_undispatched_once_an_engine_is_up(
    engine: str, wire: WireRecorder, module_settings: Settings
) -> None:
    """The ScheduleCalls of the calls cancelled above are still in JetStream (the scheduler
    naks them while no engine is live); with an engine up they must be acked, not run."""
    ok = await wire.run(_req(4), wait_s=60)
    assert ok.final.usage.completion_tokens == 4
    cancelled = [
        c.call_id
        for c in wire.calls.values()
        if c.terminal and isinstance(c.terminal[0], CallError) and c.call_id
    ]
    assert len(cancelled) == 2
    await asyncio.sleep(3.0)  # > the scheduler's longest no-engine back-off (2 s)
    for cid in cancelled:
        kinds = await _events(module_settings, cid)
        assert "dispatch" not in kinds, kinds
        assert (await _row(module_settings, cid))["status"] == "failed"


# --------------------------------------------------------------------------- with the engine


async def test_cancel_running_and_engine_waiting_calls(
    engine: str, wire: WireRecorder, client: Client, module_settings: Settings
) -> None:
    long = await wire.submit(_req(LONG))
    long_id = await _accepted(long)

    async def streaming() -> bool:
        return _deltas(long) >= 3

    await poll_until(streaming, what="the long call's first deltas")
    # one batch slot: this call is dispatched to the engine and waits there
    waiting = await wire.submit(_req(6))
    waiting_id = await _accepted(waiting)
    await poll_until(lambda: _status_is(module_settings, waiting_id, "dispatched"), what="dispatch")
    w = await client.cancel(waiting_id)
    assert (w.outcome, w.was) == ("cancelled", "dispatched")

    follower = await wire.submit(_req(5))
    await _accepted(follower)
    reply = await client.cancel(long_id, reason="enough")
    assert (reply.outcome, reply.was) == ("cancelled", "running")
    t0 = time.monotonic()

    # the slot is freed at once: the follower runs now, not after ~30 s
    await asyncio.wait_for(follower.done.wait(), 10)
    assert follower.final.usage.completion_tokens == 5
    assert time.monotonic() - t0 < 10

    await asyncio.wait_for(long.done.wait(), 5)
    err = _only_error(long)
    assert err.code == ErrorCode.cancelled and err.call_id == long_id
    streamed = _deltas(long)
    await asyncio.sleep(1.0)
    assert _deltas(long) == streamed  # the stream stopped
    assert len(long.streamed_tokens()) < LONG
    assert not any(isinstance(m, CallFinal) for m in long.messages)
    assert len(long.terminal) == 1  # the engine's own cancel handling sent nothing more

    await asyncio.wait_for(waiting.done.wait(), 5)
    assert _only_error(waiting).code == ErrorCode.cancelled
    assert _deltas(waiting) == 0  # it never ran
    for cid in (long_id, waiting_id):
        row = await _row(module_settings, cid)
        assert (row["status"], row["error_code"]) == ("failed", "cancelled")
    assert (await _events(module_settings, waiting_id)).count("fail") == 1


async def test_cancel_after_finish_and_twice(
    engine: str, wire: WireRecorder, client: Client
) -> None:
    done = await wire.run(_req(3), wait_s=30)
    call_id = done.final.call_id
    first = await client.cancel(call_id)
    second = await client.cancel(call_id)
    for r in (first, second):
        assert (r.outcome, r.status, r.call_id) == ("already_finished", "finished", call_id)
    await asyncio.sleep(0.5)
    assert len(done.terminal) == 1 and isinstance(done.terminal[0], CallFinal)


async def test_bad_cancel_requests_get_typed_errors(stack: Stack, client: Client) -> None:
    nc = await nats.connect(stack.settings.nats_url)
    try:
        for body in (b"{}", b'{"call_id": "a", "client_call_id": "b"}', b"nope"):
            msg = await nc.request(stack.subjects.cancel, body, timeout=5)
            err = CallError.model_validate_json(msg.data)
            assert err.code in (ErrorCode.validation_error, ErrorCode.invalid_json), err
    finally:
        await nc.close()


async def test_python_client_task_cancellation_cancels_the_call(
    engine: str, client: Client, module_settings: Settings
) -> None:
    async with client.program() as p:
        task = asyncio.create_task(p.call(prompt="long " * 4, max_tokens=LONG))

        async def running_id() -> str | None:
            rows = await db_fetch(
                module_settings.database_url,
                "SELECT id FROM calls WHERE program_id = $1 AND status = 'running'",
                p.program_id,
            )
            return rows[0]["id"] if rows else None

        call_id = await poll_until(running_id, what="the call to run")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await poll_until(
            lambda: _status_is(module_settings, call_id, "failed"), within_s=10, what="the cancel"
        )
        assert (await _row(module_settings, call_id))["error_code"] == "cancelled"

        # an abandoned stream (closed before its result) cancels too
        gen = p.stream(prompt="stream " * 4, max_tokens=LONG)
        async with contextlib.aclosing(gen):
            async for item in gen:
                assert isinstance(item, TokenDelta)
                stream_id = item.call_id
                break
        await poll_until(
            lambda: _status_is(module_settings, stream_id, "failed"), within_s=10, what="the cancel"
        )

        # and the slot is free again
        r = await p.call(prompt="after", max_tokens=4, timeout=20)
        assert r.usage.completion_tokens == 4


async def test_client_cancel_before_accept_uses_the_call_id_once_known(
    engine: str, client: Client, module_settings: Settings
) -> None:
    async with client.program() as p:
        task = asyncio.create_task(p.call(prompt="quick cancel", max_tokens=LONG))
        for _ in range(3):  # submitted, but (most likely) not yet accepted
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises((asyncio.CancelledError, CallFailed)):
            await task

        async def ended() -> list[Any]:
            rows = await db_fetch(
                module_settings.database_url,
                "SELECT status, error_code FROM calls WHERE program_id = $1",
                p.program_id,
            )
            return [r for r in rows if r["status"] in ("failed", "finished")] if rows else []

        (row,) = await poll_until(ended, within_s=15, what="the call to be cancelled")
        assert (row["status"], row["error_code"]) == ("failed", "cancelled")


# --------------------------------------------------------------------------- HTTP


async def test_http_sse_disconnect_cancels_the_call(
    stack: Stack, engine: str, module_settings: Settings
) -> None:
    url = stack.http_url
    body = {"model": "simulated", "prompt": "stream then leave", "max_tokens": LONG, "stream": True}
    async with httpx.AsyncClient(base_url=url, timeout=30) as h:
        async with h.stream("POST", "/v1/completions", json=body) as resp:
            assert resp.status_code == 200
            call_id = resp.headers["x-autellix-call-id"]
            chunks = 0
            async for line in resp.aiter_lines():
                if line.startswith("data: {"):
                    json.loads(line[6:])
                    chunks += 1
                if chunks >= 3:
                    break  # leaving the block closes the connection mid-stream
    await poll_until(
        lambda: _status_is(module_settings, call_id, "failed"), within_s=10, what="the cancel"
    )
    row = await _row(module_settings, call_id)
    assert row["error_code"] == "cancelled" and (row["completion_tokens"] or 0) < LONG
    assert (await _events(module_settings, call_id))[-1] == "fail"


async def test_http_non_streamed_disconnect_cancels_the_call(
    stack: Stack, engine: str, module_settings: Settings
) -> None:
    url = stack.http_url
    program = f"hx-{uuid.uuid4().hex[:10]}"
    body = {"model": "simulated", "prompt": "wait then leave", "max_tokens": LONG}
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(30, read=1.5)) as h:
        with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes the connection
            await h.post("/v1/completions", json=body, headers={"X-Autellix-Program-Id": program})

    async def cancelled() -> Any:
        rows = await db_fetch(
            module_settings.database_url,
            "SELECT status, error_code FROM calls WHERE program_id = $1",
            program,
        )
        return rows if rows and rows[0]["status"] == "failed" else None

    (row,) = await poll_until(cancelled, within_s=10, what="the cancel")
    assert row["error_code"] == "cancelled"
    # a completed request is unaffected by the disconnect watcher
    async with httpx.AsyncClient(base_url=url, timeout=30) as h:
        r = await h.post(
            "/v1/completions", json={"model": "simulated", "prompt": "x", "max_tokens": 3}
        )
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] == 3
