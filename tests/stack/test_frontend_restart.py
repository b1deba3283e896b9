"""The frontend SIGKILLed under load and restarted: every request gets its answer or an explicit
error (none silently lost), and the client's resends never run a call twice.

The Python client gives each call a client call id and resends it until a frontend accepts it
(`accept_timeout`), so calls sent while no frontend runs go through once it is back; Postgres
is the judge: one row per client call id, finished once. With no frontend at all, a call fails
explicitly within its accept timeout instead of waiting for its call timeout.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio
from svc_stack import Stack, db_fetch

from autellix.client import CallFailed, Client
from autellix.client.results import CallResult
from autellix.wire.protocol import CallRequest


@pytest_asyncio.fixture(scope="module")
async def stack(new_stack: Callable[[], Stack]) -> AsyncIterator[Stack]:
    s = new_stack()
    s.start_frontend()
    s.start("scheduler", "scheduler", "--reconcile-after", "3")
    s.start_engine("fek-e1", "--max-batch", "32", "--token-latency", "0.005")
    async with s.running():
        yield s


async def _program(client: Client, pid: str, n: int) -> list[CallResult | CallFailed]:
    """A program making `n` calls one after another; each ends with a result or an error."""
    out: list[CallResult | CallFailed] = []
    for i in range(n):
        request = CallRequest(program_id=pid, prompt=f"{pid} turn {i}", metadata={"i": str(i)})
        try:
            out.append(await client.call(request, 60))
        except CallFailed as exc:
            out.append(exc)
        await asyncio.sleep(0.02)
    return out


@pytest.mark.timeout(120)
async def test_frontend_killed_mid_load_loses_nothing_and_runs_nothing_twice(
    stack: Stack,
) -> None:
    settings = stack.settings
    tag = uuid.uuid4().hex[:8]
    async with Client(settings.nats_url, namespace=settings.namespace, accept_timeout=20) as c:
        load = [asyncio.create_task(_program(c, f"fek-{tag}-{p}", 12)) for p in range(8)]
        await asyncio.sleep(1.0)
        stack.group.signal("frontend", signal.SIGKILL)
        await asyncio.to_thread(stack.group["frontend"].exited.wait, 10)
        await asyncio.sleep(1.0)  # requests sent now find no frontend: resent until one is up
        stack.group.start(stack.group["frontend"].spec)
        await stack.group.wait_ready_async("frontend", timeout=60)
        answers = [a for prog in await asyncio.wait_for(asyncio.gather(*load), 90) for a in prog]
        recovered = dict(c.recovered)
    assert len(answers) == 8 * 12  # every request answered, one way or the other
    errors = [a for a in answers if isinstance(a, CallFailed)]
    assert not errors, [str(e) for e in errors]  # resent until accepted: none needed to fail
    assert recovered["resent"] > 0, recovered  # some requests did meet the dead frontend
    rows = await db_fetch(
        settings.database_url,
        """SELECT client_call_id, count(*) AS n, min(status) AS status,
                  (SELECT count(*) FROM call_events e WHERE e.call_id = min(c.id)
                   AND e.kind = 'finish') AS finishes
           FROM calls c WHERE program_id LIKE $1 GROUP BY client_call_id""",
        f"fek-{tag}-%",
    )
    assert len(rows) == 8 * 12, "a call was lost before it reached Postgres, or split in two"
    for row in rows:
        assert row["n"] == 1 and row["status"] == "finished" and row["finishes"] == 1, dict(row)
    by_key = {r["client_call_id"] for r in rows}
    assert all(isinstance(a, CallResult) for a in answers) and len(by_key) == len(answers)


async def test_no_frontend_is_an_explicit_error_within_the_accept_timeout(stack: Stack) -> None:
    async with Client(
        stack.settings.nats_url, namespace=f"{stack.settings.namespace}_none", accept_timeout=1.0
    ) as client:
        t0 = time.monotonic()
        with pytest.raises(CallFailed) as err:
            await client.call(CallRequest(program_id="p-none", prompt="hi"), timeout=60)
        waited = time.monotonic() - t0
    assert err.value.retryable and "no Autellix frontend" in str(err.value)
    assert waited < 2.0, f"answered after {waited:.1f}s"
