"""Back-pressure and the 2,000-call burst, through real processes.

One stack: a frontend with a small `--max-unfinished-calls`, a scheduler, two sim engines with
a token latency (so calls stay unfinished long enough to fill the bound) saving progress every
0.1 s while the scheduler folds reports every 0.05 s: the concurrent progress saves, folds and
dispatch marks that once deadlocked in Postgres.

What it shows: 2,000 calls sent at once are each answered exactly once, either `accepted` and
then completed, or `overloaded` (retryable, nothing stored); HTTP callers get 429 with
Retry-After while the bound is reached; below it again calls are accepted on both paths; every
accepted call is finished in Postgres; no service logged a deadlock or an error traceback.
"""

from __future__ import annotations

import asyncio
import time

import httpx
from svc_stack import Stack, WireCall, WireRecorder, db_fetch, stack_fixture

from autellix.wire.protocol import (
    CallAccepted,
    CallError,
    CallFinal,
    CallRequest,
    ErrorCode,
    SamplingParams,
)

LIMIT = 400
BURST = 2000
PROGRAMS = 200
MAX_TOKENS = 24
MODEL = "simulated"
#: HTTP completions sent together once the bound is reached
HTTP_PROBES = 60
#: engines drain at most 2 x 32 calls per 24 x 0.05 s (~53 calls/s), well below the rate a
#: frontend accepts a burst at, so the bound is reached whatever the machine's speed
ENGINE_ARGS = ("--max-batch", "32", "--token-latency", "0.05", "--progress-interval", "0.1")


stack = stack_fixture(
    frontend=("--max-unfinished-calls", str(LIMIT)),
    http=True,
    engines={"bp-e1": ENGINE_ARGS, "bp-e2": ENGINE_ARGS},
    await_engines=True,
)


def _request(i: int) -> CallRequest:
    return CallRequest(
        program_id=f"burst-{i % PROGRAMS}",
        thread_id=f"t{i % 3}",
        prompt=f"burst call {i}",
        sampling=SamplingParams(max_tokens=MAX_TOKENS),
    )


def _outcome(call: WireCall) -> str:
    """'completed' or 'overloaded'; anything else fails the test with what came back."""
    first = call.messages[0]
    if isinstance(first, CallError):
        assert first.code == ErrorCode.overloaded and first.retryable, first
        assert len(call.messages) == 1, call.messages
        return "overloaded"
    assert isinstance(first, CallAccepted), first
    (final,) = call.terminal
    assert isinstance(final, CallFinal), final
    assert len(final.token_ids) == MAX_TOKENS
    return "completed"


async def _http_while_full(url: str) -> list[httpx.Response]:
    """HTTP completions sent at once while the bound is reached: the answers.

    Sent together, not one after another: a sequential caller waits out each completion behind
    the queue, and by the time it asks again a finished call may have opened a slot, so it would
    only ever see room. Engines free a slot every ~20 ms, far fewer than HTTP_PROBES arrive in
    that time, so some must be refused.
    """
    body = {"model": MODEL, "prompt": "http during the burst", "max_tokens": 4}
    limits = httpx.Limits(max_connections=HTTP_PROBES, max_keepalive_connections=HTTP_PROBES)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as h:
        return list(
            await asyncio.gather(
                *(h.post("/v1/completions", json=body) for _ in range(HTTP_PROBES))
            )
        )


def _problems(log: str) -> list[str]:
    return [
        line
        for line in log.splitlines()
        if "deadlock" in line.lower()
        or "Traceback" in line
        or ('"level": "error"' in line and '"exception"' in line)
    ]


async def test_a_burst_of_2000_calls_is_answered_and_bounded(
    stack: Stack, wire: WireRecorder
) -> None:
    assert stack.http_url is not None
    started = time.monotonic()
    burst = [await wire.submit(_request(i)) for i in range(BURST)]
    # wait for the first refusal: the bound is reached, so HTTP must be refused now too
    while not any(c.messages and isinstance(c.messages[0], CallError) for c in burst):
        assert time.monotonic() - started < 60, "no call was refused: no back-pressure"
        await asyncio.sleep(0.01)
    during = await _http_while_full(stack.http_url)
    await asyncio.wait_for(asyncio.gather(*(c.done.wait() for c in burst)), 240)
    elapsed = time.monotonic() - started
    await asyncio.sleep(0.3)  # a duplicate answer would arrive now

    outcomes = [_outcome(c) for c in burst]
    accepted = outcomes.count("completed")
    refused = outcomes.count("overloaded")
    print(f"burst: {accepted} completed, {refused} overloaded in {elapsed:.1f}s")
    assert refused > 0 and accepted >= LIMIT, (accepted, refused)

    codes = [r.status_code for r in during]
    refusals = [r for r in during if r.status_code == 429]
    assert refusals, codes
    for refusal in refusals:
        assert int(refusal.headers["retry-after"]) >= 1
        assert refusal.json()["error"]["code"] == "overloaded"
    assert set(codes) <= {200, 429}, [r.text for r in during if r.status_code not in (200, 429)]

    # nothing accepted is lost, nothing refused is stored
    rows = await db_fetch(
        stack.settings.database_url,
        "SELECT status, count(*) AS n FROM calls WHERE program_id LIKE 'burst-%' GROUP BY 1",
    )
    assert {r["status"]: r["n"] for r in rows} == {"finished": accepted}

    # below the bound again: both paths accept
    again = await wire.run(_request(BURST), wait_s=60)
    assert _outcome(again) == "completed"
    async with httpx.AsyncClient(base_url=stack.http_url, timeout=60) as h:
        r = await h.post("/v1/completions", json={"model": MODEL, "prompt": "x", "max_tokens": 3})
    assert r.status_code == 200, r.text

    for name in stack.group.names:
        assert not _problems(stack.logs(name)), (name, _problems(stack.logs(name))[:5])
    assert stack.group.running() == stack.group.names
