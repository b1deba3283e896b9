"""The frontend through a Postgres outage: typed, retryable refusals, then service again.

The frontend reaches Postgres through a TCP proxy the test cuts (`tests/tcp_proxy.py`: every
connection reset, then "connection refused", as a crashed or unreachable server looks), while
the scheduler and the simulated engine keep their own connections. What it shows:

* a call submitted over NATS during the outage is refused `unavailable` (retryable), not
  `internal`; over HTTP it gets 503 `unavailable` with Retry-After; the frontend logs a warning
  for each, no traceback, and keeps running;
* the Python client rides it out: a call made during the outage is resent under its client call
  id until the frontend accepts it once Postgres is back, and is answered once;
* after the outage both paths accept and answer again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import pytest_asyncio
from svc_stack import Stack, WireRecorder, db_fetch
from tcp_proxy import TcpProxy

from autellix.client import Client
from autellix.runtime.settings import Settings
from autellix.wire.protocol import (
    CallAccepted,
    CallError,
    CallFinal,
    CallRequest,
    ErrorCode,
    SamplingParams,
)


@pytest.fixture(scope="module")
def proxy(module_settings: Settings) -> Iterator[TcpProxy]:
    url = urlsplit(module_settings.database_url)
    with TcpProxy(url.hostname or "127.0.0.1", url.port or 5432) as p:
        yield p


@pytest_asyncio.fixture(scope="module")
async def stack(
    new_stack: Callable[[], Stack], proxy: TcpProxy, module_settings: Settings
) -> AsyncIterator[Stack]:
    url = urlsplit(module_settings.database_url)
    netloc = url.netloc.rsplit("@", 1)[0] + "@" if "@" in url.netloc else ""
    proxied = urlunsplit(url._replace(netloc=f"{netloc}127.0.0.1:{proxy.port}"))
    s = new_stack()
    s.start_frontend(http=True, env={"AUTELLIX_DATABASE_URL": proxied})
    s.start("scheduler", "scheduler")
    s.start_engine("outage-e1", "--token-latency", "0.005")
    async with s.running():
        yield s


def _req(name: str, **kw: object) -> CallRequest:
    return CallRequest(
        program_id=f"outage-{name}",
        prompt=f"through the outage: {name}",
        sampling=SamplingParams(max_tokens=5),
        **kw,  # type: ignore[arg-type]
    )


async def _served(stack: Stack, wire: WireRecorder, name: str) -> None:
    """A call over NATS and one over HTTP are answered (retrying while the frontend's pool
    reconnects)."""
    for attempt in range(40):
        call = await wire.run(_req(f"{name}-{attempt}"), wait_s=30)
        first = call.messages[0]
        if isinstance(first, CallAccepted):
            assert isinstance(call.terminal[-1], CallFinal), call.messages
            break
        assert isinstance(first, CallError) and first.code == ErrorCode.unavailable, first
        await asyncio.sleep(0.25)
    else:
        raise AssertionError("not accepted again after the outage")
    body = {"model": "simulated", "prompt": "http after", "max_tokens": 3}
    async with httpx.AsyncClient(base_url=stack.http_url or "", timeout=30) as h:
        r = await h.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text


async def test_outage_refuses_unavailable_and_recovers(
    stack: Stack, wire: WireRecorder, proxy: TcpProxy
) -> None:
    await _served(stack, wire, "before")
    proxy.cut()
    try:
        call = await wire.run(_req("during"), wait_s=30)
        (only,) = call.messages
        assert isinstance(only, CallError), only
        assert only.code == ErrorCode.unavailable and only.retryable, only

        body = {"model": "simulated", "prompt": "http during", "max_tokens": 3}
        async with httpx.AsyncClient(base_url=stack.http_url or "", timeout=30) as h:
            r = await h.post("/v1/completions", json=body)
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "unavailable"
        assert int(r.headers["retry-after"]) >= 1
    finally:
        proxy.restore()
    await _served(stack, wire, "after")

    log = stack.logs("frontend")
    assert "database unavailable" in log
    assert "Traceback" not in log, log[-3000:]
    assert stack.group.running() == stack.group.names


async def test_client_call_made_during_an_outage_is_answered_once(
    stack: Stack, proxy: TcpProxy
) -> None:
    proxy.cut()
    restored = False
    try:
        async with Client(
            stack.settings.nats_url, namespace=stack.settings.namespace, accept_timeout=30
        ) as client:
            task = asyncio.create_task(client.call(_req("client", client_call_id="cc-1")))
            await asyncio.sleep(2.0)  # the client is refused (and resends) meanwhile
            assert not task.done()
            proxy.restore()
            restored = True
            result = await asyncio.wait_for(task, 60)
            assert len(result.token_ids) == 5
            assert client.recovered["resent"] >= 1  # refused, resent, accepted once back
    finally:
        if not restored:
            proxy.restore()
    rows = await db_fetch(
        stack.settings.database_url,
        "SELECT status FROM calls WHERE program_id = 'outage-client'",
    )
    assert [r["status"] for r in rows] == ["finished"]
