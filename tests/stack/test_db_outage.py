"""Services through a Postgres outage: typed, retryable refusals, orphans handed back at once.

The frontend and the simulated engine each reach Postgres through a TCP proxy the test cuts
(`tests/tcp_proxy.py`: every connection reset, then "connection refused", as a crashed or
unreachable server looks); the scheduler keeps its own connection. What it shows:

* a call submitted over NATS during the outage is refused `unavailable` (retryable), not
  `internal`; over HTTP it gets 503 `unavailable` with Retry-After; the frontend logs a warning
  for each, no traceback, and keeps running;
* the Python client rides it out: a call made during the outage is resent under its client call
  id until the frontend accepts it once Postgres is back, and is answered once;
* after the outage both paths accept and answer again;
* an engine whose Postgres link comes back hands back at once a call Postgres says it owns but
  that it never got (its Dispatch lost in the outage), so the call is answered within seconds,
  not after the periodic orphan sweep (set to 10 minutes here).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import nats
import pytest
import pytest_asyncio
from svc_stack import Stack, WireRecorder, db_fetch
from tcp_proxy import TcpProxy

from autellix.client import Client
from autellix.runtime.settings import Settings, asyncpg_dsn
from autellix.store.accept import accept_call, new_call_id
from autellix.wire.protocol import (
    CALL_REPLY,
    CallAccepted,
    CallError,
    CallFinal,
    CallRequest,
    ErrorCode,
    SamplingParams,
)

ENGINE = "outage-e1"
HOST = "outage-host"  # an engine host of 3 light identities (`--identities`)


def _proxy_for(database_url: str) -> TcpProxy:
    url = urlsplit(database_url)
    return TcpProxy(url.hostname or "127.0.0.1", url.port or 5432)


def _through(database_url: str, proxy: TcpProxy) -> str:
    url = urlsplit(database_url)
    user = url.netloc.rsplit("@", 1)[0] + "@" if "@" in url.netloc else ""
    return urlunsplit(url._replace(netloc=f"{user}127.0.0.1:{proxy.port}"))


@pytest.fixture(scope="module")
def proxy(module_settings: Settings) -> Iterator[TcpProxy]:
    """The frontend's way to Postgres."""
    with _proxy_for(module_settings.database_url) as p:
        yield p


@pytest.fixture(scope="module")
def engine_proxy(module_settings: Settings) -> Iterator[TcpProxy]:
    """The engine's way to Postgres."""
    with _proxy_for(module_settings.database_url) as p:
        yield p


@pytest.fixture(scope="module")
def host_proxy(module_settings: Settings) -> Iterator[TcpProxy]:
    """The engine host's way to Postgres."""
    with _proxy_for(module_settings.database_url) as p:
        yield p


@pytest_asyncio.fixture(scope="module")
async def stack(
    new_stack: Callable[[], Stack],
    proxy: TcpProxy,
    engine_proxy: TcpProxy,
    host_proxy: TcpProxy,
    module_settings: Settings,
) -> AsyncIterator[Stack]:
    url = module_settings.database_url
    s = new_stack()
    s.start_frontend(http=True, env={"AUTELLIX_DATABASE_URL": _through(url, proxy)})
    s.start("scheduler", "scheduler")
    s.start(
        ENGINE, "engine", "--engine-id", ENGINE, "--token-latency", "0.005",
        "--orphan-sweep", "600", stop_timeout=30.0,
        env={"AUTELLIX_DATABASE_URL": _through(url, engine_proxy)},
    )  # fmt: skip
    s.start(
        HOST, "engine", "--engine-id", HOST, "--identities", "3", "--token-latency", "0.005",
        "--orphan-sweep", "600", stop_timeout=30.0,
        env={"AUTELLIX_DATABASE_URL": _through(url, host_proxy)},
    )  # fmt: skip
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
            # a route that is not a call: opening a program (OpenAI's error shape, not a bare 500)
            r = await h.post("/v1/programs", json={})
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "unavailable", r.text
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


@pytest.mark.parametrize("where", ["engine", "host"])
async def test_engine_hands_back_an_orphan_once_postgres_is_back(
    stack: Stack, engine_proxy: TcpProxy, host_proxy: TcpProxy, where: str
) -> None:
    """A call Postgres says the engine owns (dispatched 10 s ago) but whose Dispatch never
    arrived: after the engine's Postgres link was cut and restored it is handed back, dispatched
    again and answered, well before the 10-minute periodic sweep. Also for an identity of an
    engine host that holds no call at all (only the host's heartbeat write sees the outage)."""
    owner, cut = (ENGINE, engine_proxy) if where == "engine" else (f"{HOST}-0001", host_proxy)
    nc = await nats.connect(stack.settings.nats_url)
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    request = _req("orphan")
    call_id = new_call_id()
    conn = await asyncpg.connect(asyncpg_dsn(stack.settings.database_url))
    try:
        await accept_call(
            conn,
            call_id=call_id,
            program_id=request.program_id,
            thread_id=request.thread_id,
            client_call_id=None,
            parent_ids=[],
            reply_to=inbox,
            request_json=request.model_dump_json(exclude_none=True),
        )
        # as if a scheduler had dispatched it to the engine and the Dispatch was lost
        await conn.execute(
            """UPDATE calls SET status = 'dispatched', engine_id = $2, attempts = 1,
                      dispatched_at = now() - interval '10 seconds'
               WHERE id = $1""",
            call_id,
            owner,
        )
        cut.cut()
        await asyncio.sleep(2.5)  # heartbeats fail meanwhile: the engine sees the outage
        cut.restore()
        started = asyncio.get_running_loop().time()
        final: CallFinal | None = None
        while final is None:
            msg = await sub.next_msg(timeout=30)
            reply = CALL_REPLY.validate_json(msg.data)
            assert not isinstance(reply, CallError), reply
            if isinstance(reply, CallFinal):
                final = reply
        waited = asyncio.get_running_loop().time() - started
        assert final.call_id == call_id and len(final.token_ids) == 5
        assert waited < 20, waited
        events = await conn.fetch(
            "SELECT kind, reason FROM call_events WHERE call_id = $1 ORDER BY at", call_id
        )
        assert ("requeue", "orphaned on a live engine") in [
            (e["kind"], e["reason"]) for e in events
        ]
    finally:
        await conn.close()
        await nc.close()
    assert "swept after a database outage" in stack.logs(ENGINE if where == "engine" else HOST)
