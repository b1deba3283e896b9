"""nats-server SIGKILLed with streamed calls in flight and restarted on its port and data dir:
every call completes exactly once, with every token once, at the Python client and through
the HTTP API's server-sent events.

The stack runs on a private embedded nats-server (the session's shared one must not be
killed), JetStream on a file store in its data dir so the streams survive the restart. What a
caller missed while NATS was down (deltas, finals published into the void) is read back from
Postgres by `CallResume` (docs/protocol.md, "Resuming a call"). Checked against Postgres too:
one row per client call id, its stored tokens exactly the ones the caller got.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from polling import poll_until
from svc_stack import Stack, db_fetch

from autellix.backends.sim import _WORDS
from autellix.client import Client
from autellix.client.results import CallResult
from autellix.local.embedded import EmbeddedNats
from autellix.runtime.settings import Settings
from autellix.wire.protocol import TokenDelta

OUTAGE_S = 2.0


@pytest_asyncio.fixture(scope="module")
async def nats_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EmbeddedNats]:
    server = EmbeddedNats(tmp_path_factory.mktemp("nats"))
    await server.start_async()
    try:
        yield server
    finally:
        await server.stop_async()


@pytest_asyncio.fixture(scope="module")
async def stack(
    nats_server: EmbeddedNats,
    make_database: Callable[..., str],
    namespace: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stack]:
    settings = Settings(
        nats_url=nats_server.url, database_url=make_database(), namespace=f"{namespace}_natsrs"
    )
    s = Stack(settings, tmp_path_factory.mktemp("logs"))
    s.start_frontend(http=True)
    s.start("scheduler", "scheduler", "--reconcile-after", "3")
    s.start_engine("nrs-e1", "--max-batch", "64", "--token-latency", "0.03")
    async with s.running():
        assert s.http_url is not None
        async with httpx.AsyncClient(base_url=s.http_url) as h:

            async def engine_seen() -> bool:
                return bool((await h.get("/health")).json()["engines"] >= 1)

            await poll_until(engine_seen, within_s=10, what="the engine's first heartbeat")
        yield s


async def _outage(server: EmbeddedNats, after_s: float) -> None:
    """SIGKILL nats-server (its whole process group), wait, start it again on its port."""
    await asyncio.sleep(after_s)
    popen = server.popen
    assert popen is not None
    os.killpg(popen.pid, signal.SIGKILL)
    await asyncio.to_thread(popen.wait, 10)
    await asyncio.sleep(OUTAGE_S)
    await asyncio.to_thread(server.restart)


async def _streamed(client: Client, pid: str, i: int) -> tuple[str, list[TokenDelta], CallResult]:
    key = f"{pid}-k{i}"
    deltas: list[TokenDelta] = []
    result: CallResult | None = None
    async with client.program(pid) as program:
        async for item in program.stream(f"turn {i}", max_tokens=60 + i, client_call_id=key):
            if isinstance(item, TokenDelta):
                deltas.append(item)
            else:
                result = item
    assert result is not None
    return key, deltas, result


@pytest.mark.timeout(120)
async def test_python_client_calls_survive_a_nats_restart(
    stack: Stack, nats_server: EmbeddedNats
) -> None:
    settings = stack.settings
    async with Client(
        settings.nats_url, namespace=settings.namespace, silence_timeout=2.0, accept_timeout=15.0
    ) as client:
        pid = f"nrs-{uuid.uuid4().hex[:8]}"
        started = [asyncio.create_task(_streamed(client, f"{pid}-{i % 6}", i)) for i in range(24)]
        outage = asyncio.create_task(_outage(nats_server, 1.0))
        await asyncio.sleep(1.5)  # nats-server is down now: these are sent into the outage
        late = [asyncio.create_task(_streamed(client, f"{pid}-late", 100 + i)) for i in range(4)]
        await outage
        done = await asyncio.wait_for(asyncio.gather(*started, *late), 60)
        recovered = dict(client.recovered)
    assert recovered["resumed"] > 0, recovered  # the reconnect was noticed and recovered from
    assert len(done) == 28
    for key, deltas, result in done:
        streamed = [t for d in deltas for t in d.token_ids]
        offsets = [d.offset for d in deltas]
        assert offsets == sorted(offsets), key
        assert streamed == result.token_ids, f"{key}: a token missing or repeated"
        assert len(result.token_ids) == result.usage.completion_tokens
        rows = await db_fetch(
            settings.database_url,
            "SELECT id, status, output_token_ids, output_text FROM calls WHERE client_call_id = $1",
            key,
        )
        assert len(rows) == 1, f"{key}: {len(rows)} rows"
        assert rows[0]["status"] == "finished" and rows[0]["id"] == result.call_id
        assert list(rows[0]["output_token_ids"]) == result.token_ids
        # the text too, also for a call whose final was lost and came back from Postgres
        assert result.text and result.text == rows[0]["output_text"], key


def _sse_words(lines: list[str]) -> tuple[list[str], list[int]]:
    """The words an SSE completion stream delivered (placeholder `<|id|>` pieces, for stored
    tokens whose text the frontend does not have, as the sim backend's word for that id) and
    the final chunk's token ids."""
    import json

    words: list[str] = []
    token_ids: list[int] = []
    for line in lines:
        if not line.startswith("data: {"):
            continue
        chunk = json.loads(line[len("data: ") :])
        assert "error" not in chunk, chunk
        for choice in chunk.get("choices") or []:
            for m in re.finditer(r"<\|(\d+)\|>| (\S+)", choice.get("text") or ""):
                words.append(_WORDS[int(m[1]) % len(_WORDS)] if m[1] else m[2])
        info = chunk.get("autellix")
        if info and info.get("token_ids"):
            token_ids = list(info["token_ids"])
    return words, token_ids


async def _sse_call(base_url: str, i: int) -> tuple[list[str], list[int]]:
    body = {"model": "simulated", "prompt": f"sse {i}", "max_tokens": 80, "stream": True}
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=60) as h,
        h.stream("POST", "/v1/completions", json=body) as r,
    ):
        assert r.status_code == 200
        lines = [line async for line in r.aiter_lines()]
    assert lines[-1] == "data: [DONE]" or "data: [DONE]" in lines
    return _sse_words(lines)


@pytest.mark.timeout(120)
async def test_http_sse_streams_survive_a_nats_restart(
    stack: Stack, nats_server: EmbeddedNats
) -> None:
    assert stack.http_url is not None
    calls = [asyncio.create_task(_sse_call(stack.http_url, i)) for i in range(8)]
    await _outage(nats_server, 1.0)
    for words, token_ids in await asyncio.wait_for(asyncio.gather(*calls), 60):
        assert len(token_ids) == 80
        assert words == [_WORDS[t % len(_WORDS)] for t in token_ids], "a token missing/repeated"


def test_the_outage_was_real(stack: Stack, nats_server: EmbeddedNats) -> None:
    """Both tests above ran across a real disconnect: the services logged it."""
    log = Path(stack.log_dir / "frontend.log").read_text()
    assert log.count("NATS reconnected") >= 2, log[-2000:]
