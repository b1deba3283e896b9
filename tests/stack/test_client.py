"""The Python client against real services: programs, threads and parents, streaming with
de-duplication by offset, typed errors and timeouts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from svc_stack import Stack, db_fetch, stack_fixture

from autellix.client import CallFailed, CallResult, CallTimeout, Client
from autellix.runtime.settings import Settings
from autellix.wire.protocol import CallRequest, ErrorCode, TokenDelta

stack = stack_fixture(
    engines={"cli-e1": ("--max-batch", "4", "--token-latency", "0.003", "--max-model-len", "1024")}
)


@pytest_asyncio.fixture
async def client(stack: Stack) -> AsyncIterator[Client]:
    async with Client(stack.settings.nats_url, namespace=stack.settings.namespace) as c:
        yield c


async def test_program_threads_and_parents(client: Client, module_settings: Settings) -> None:
    async with client.program(metadata={"kind": "tree"}) as p:
        assert p.program_id and p.program_id.startswith("p-")
        root = await p.call("plan the search", max_tokens=6)
        assert isinstance(root, CallResult)
        assert len(root.token_ids) == 6 and root.usage.completion_tokens == 6
        assert root.text and root.finish_reason == "length"
        assert root.engine.engine_id == "cli-e1" and root.engine.backend == "sim"
        assert root.timing.queue_s >= 0 and root.latency_s > 0
        branches = await asyncio.gather(
            *(p.thread(f"b{i}").call(f"branch {i}", max_tokens=4, parents=[root]) for i in range(3))
        )
        join = await p.call("join", max_tokens=2, parents=branches)
        assert {b.thread_id for b in branches} == {"b0", "b1", "b2"}
    assert p.closed is not None and p.closed.status == "closed"
    assert p.closed.stats is not None and p.closed.stats.calls == 5
    assert p.closed.stats.completion_tokens == 6 + 3 * 4 + 2
    rows = await db_fetch(
        module_settings.database_url,
        "SELECT id, thread_id, parent_ids FROM calls WHERE program_id = $1",
        p.program_id,
    )
    parents = {r["id"]: (r["thread_id"], list(r["parent_ids"])) for r in rows}
    assert parents[join.call_id] == ("main", [b.call_id for b in branches])
    assert all(parents[b.call_id] == (b.thread_id, [root.call_id]) for b in branches)


async def test_stream_yields_deltas_then_result(client: Client) -> None:
    async with client.program() as p:
        items = [item async for item in p.stream("tell me a long story", max_tokens=60)]
    *deltas, result = items
    assert isinstance(result, CallResult)
    assert deltas and all(isinstance(d, TokenDelta) for d in deltas)
    assert [d.offset for d in deltas] == [
        sum(len(x.token_ids) for x in deltas[:i]) for i in range(len(deltas))
    ]
    assert [t for d in deltas for t in d.token_ids] == result.token_ids
    assert "".join(d.text or "" for d in deltas) == result.text
    assert result.first_token_s is not None and result.first_token_s <= result.latency_s


async def test_prompt_forms(client: Client) -> None:
    async with client.program() as p:
        a = await p.call(messages=[{"role": "user", "content": "hi"}], max_tokens=3)
        b = await p.call(prompt_token_ids=[5, 6, 7, 8], max_tokens=3)
        assert b.usage.prompt_tokens == 4
        assert a.usage.prompt_tokens > 0
        # the simulated model is deterministic: same prompt, same tokens
        c = await p.call(prompt_token_ids=[5, 6, 7, 8], max_tokens=3)
        assert c.token_ids == b.token_ids


async def test_named_program_and_client_call_id(client: Client) -> None:
    async with client.program("client-named") as p:
        assert p.program_id == "client-named"
        r1 = await p.call("once", max_tokens=5, client_call_id="idem-1")
        r2 = await p.call("once", max_tokens=5, client_call_id="idem-1")
        assert r1.call_id == r2.call_id and not r1.duplicate and r2.duplicate
        assert r1.token_ids == r2.token_ids
    with pytest.raises(CallFailed) as err:  # closed programs stay closed
        async with client.program("client-named"):
            pass
    assert err.value.code == ErrorCode.program_closed


async def test_typed_errors(client: Client) -> None:
    async with client.program() as p:
        with pytest.raises(CallFailed) as err:
            await p.call("x" * 8000, max_tokens=16)  # ~2000 tokens > the engine's 1024
        assert err.value.code == ErrorCode.prompt_too_long and err.value.call_id
        with pytest.raises(CallTimeout) as tmo:
            await p.call("slow", max_tokens=900, timeout=0.3)
        assert tmo.value.code == ErrorCode.timeout and tmo.value.retryable
        pid = p.program_id
    with pytest.raises(CallFailed) as closed:
        await p.call("after close", max_tokens=1)
    assert closed.value.code == ErrorCode.program_closed
    assert pid


async def test_no_frontend_is_a_clear_error(stack: Stack) -> None:
    async with Client(stack.settings.nats_url, namespace="nobody_listens_here") as c:
        with pytest.raises(CallFailed) as err:
            async with c.program():
                pass
    assert err.value.retryable and "no Autellix frontend" in str(err.value)
    async with Client(stack.settings.nats_url, namespace="nobody_listens_here") as c:
        with pytest.raises(CallFailed) as err:  # a call fails fast too (no-responders status)
            await c.call(CallRequest(program_id="p", prompt="hi"), timeout=10)
    assert err.value.retryable and not isinstance(err.value, CallTimeout)
