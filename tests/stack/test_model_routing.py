"""A call naming a model no live engine serves is refused at the frontend's door over NATS, as
over HTTP: the real stack (a NATS-only frontend, a scheduler, two simulated engines serving
different `--served-model-name`s) answers a known model and a call with no model, and refuses
an unknown one with `model_not_found` at once (well under the scheduler's 60 s no-engine wait),
storing no row. The start-up grace of the rule (`live_engines.EngineDirectory`) is checked on
the real bus and Postgres: it ends once every engine the engines table lists is heard, or after
`START_GRACE_S`; with no engine heard nothing is refused."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import nats
import pytest
import pytest_asyncio
from svc_stack import Stack, db_fetch, stack_fixture

from autellix.client import CallFailed, Client
from autellix.runtime.settings import Settings
from autellix.services.frontend.live_engines import START_GRACE_S, EngineDirectory
from autellix.store.db import create_pool
from autellix.store.engines import register_engine
from autellix.wire.protocol import CallRequest, EngineHeartbeat, ErrorCode, Subjects, encode

stack = stack_fixture(
    engines={
        "alpha-e": ("--served-model-name", "alpha"),
        "beta-e": ("--served-model-name", "beta"),
    },
)


@pytest_asyncio.fixture
async def client(stack: Stack) -> AsyncIterator[Client]:
    async with Client(stack.settings.nats_url, namespace=stack.settings.namespace) as c:
        yield c


def ask(program_id: str, model: str | None) -> CallRequest:
    return CallRequest(
        program_id=program_id, prompt="route me", model=model, sampling={"max_tokens": 2}
    )


async def test_served_models_run_and_unknown_is_refused_at_once(
    client: Client, module_settings: Settings
) -> None:
    # the two engines and the frontend start together: wait until the frontend routes both
    for model, engine in (("alpha", "alpha-e"), ("beta", "beta-e")):
        result = await client.call(ask(f"known-{model}", model), timeout=60)
        assert result.engine.engine_id == engine
    anywhere = await client.call(ask("no-model", None), timeout=60)
    assert anywhere.engine.engine_id in ("alpha-e", "beta-e")

    started = time.monotonic()
    with pytest.raises(CallFailed) as err:
        await client.call(ask("unknown-model", "gamma"), timeout=60)
    refused_s = time.monotonic() - started
    assert err.value.code == ErrorCode.model_not_found
    assert err.value.call_id is None and not err.value.retryable
    assert "gamma" in err.value.error.message and "alpha, beta" in err.value.error.message
    assert refused_s < 5.0, f"refused after {refused_s:.1f} s, not at the door"
    rows = await db_fetch(
        module_settings.database_url,
        "SELECT (SELECT count(*) FROM calls WHERE program_id = $1) AS calls,"
        " (SELECT count(*) FROM programs WHERE id = $1) AS programs",
        "unknown-model",
    )
    assert (rows[0]["calls"], rows[0]["programs"]) == (0, 0)


def heartbeat(engine_id: str, *names: str) -> bytes:
    return encode(
        EngineHeartbeat(
            engine_id=engine_id,
            backend="sim",
            model=engine_id,
            served_models=list(names),
            max_batch=1,
            running=0,
            waiting=0,
            at=datetime.now(UTC),
        )
    )


async def heard(directory: EngineDirectory, count: int) -> None:
    for _ in range(200):
        if len(directory.live()) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the directory heard {len(directory.live())} of {count} engines")


async def test_grace_ends_once_the_engines_table_is_heard(stack: Stack) -> None:
    """The stack's two engines are live in the engines table: a directory started now refuses
    nothing until it has heard both, then refuses an unknown model (before `START_GRACE_S`)."""
    pool = await create_pool(stack.settings.database_url, max_size=1)
    nc = await nats.connect(stack.settings.nats_url)
    directory = EngineDirectory(nc, stack.subjects, grace_s=60.0)
    try:
        await directory.start(pool)
        if len(directory.live()) < 2:  # a heartbeat may already have come in
            assert directory.refusal("gamma") is None
        await heard(directory, 2)
        refused = directory.refusal("gamma")
        assert refused is not None and refused.code == ErrorCode.model_not_found
        assert refused.details == [{"loc": "model", "msg": "no live engine serves this model"}]
        assert directory.refusal("alpha") is None and directory.refusal(None) is None
    finally:
        await directory.stop()
        await nc.close()
        await pool.close()


async def test_grace_bounds_an_unheard_engine_and_no_engine_refuses_nothing(
    module_settings: Settings, make_database: Callable[..., str]
) -> None:
    """An engine the table lists but that is never heard holds the grace for `START_GRACE_S`
    at most; with no engine heard at all nothing is refused, grace or not."""
    pool = await create_pool(await asyncio.to_thread(make_database), max_size=1)
    async with pool.acquire() as conn:
        await register_engine(
            conn, engine_id="ghost-e", backend="sim", model="ghost", max_batch=1, meta={}
        )
    subjects = Subjects(f"{module_settings.namespace}_grace")
    nc = await nats.connect(module_settings.nats_url)
    directory = EngineDirectory(nc, subjects)
    try:
        await directory.start(pool)
        started = time.monotonic()
        assert directory.refusal("gamma") is None
        await nc.publish(subjects.heartbeat, heartbeat("e1", "alpha"))
        await heard(directory, 1)
        if time.monotonic() - started < START_GRACE_S - 0.2:
            assert directory.refusal("gamma") is None  # ghost-e unheard: the view may be partial
        await asyncio.sleep(max(0.0, started + START_GRACE_S - time.monotonic()) + 0.05)
        refused = directory.refusal("gamma")
        assert refused is not None and refused.code == ErrorCode.model_not_found
        assert directory.refusal("alpha") is None
    finally:
        await directory.stop()
    empty = EngineDirectory(nc, Subjects(f"{module_settings.namespace}_empty"), grace_s=0.0)
    try:
        await empty.start(pool)
        assert empty.refusal("gamma") is None  # no engine live: the call waits for one
    finally:
        await empty.stop()
        await nc.close()
        await pool.close()
