"""A three-server NATS cluster with R3 JetStream streams under a real stack (frontend, two
schedulers, two simulated engines): every stream is replicated, an operator's replica count
survives a service start, and streamed calls keep being answered exactly once while the server
leading the calls stream is SIGKILLed and started again.

The load and its accounting are `autellix.bench.cluster.failover` (what `autellix bench cluster`
records as `nats_failover`): core NATS messages in flight through the killed server are gone (at
most once by design), so the client resubmits a call silent for `SILENCE_S` under the same
`client_call_id`, which the frontend answers with the same call (and its stored final, if it
already ended). A call counts as lost if it never ends, duplicated if its inbox gets two
terminal messages.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace

import pytest
import pytest_asyncio
from svc_stack import Stack

from autellix.bench.cluster.failover import FailoverPlan, connect, run_failover
from autellix.local.nats_cluster import EmbeddedNatsCluster
from autellix.runtime.settings import Settings
from autellix.transport import bus
from autellix.wire.protocol import CallFinal, Subjects

ENGINES = ("cl-a", "cl-b")
RATE_PER_S = 12.0
LOAD_S = 7.0
KILL_AT_S = 2.0
DOWN_S = 2.0
SILENCE_S = 3.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[EmbeddedNatsCluster]:
    """Three clustered servers on loopback, started from the main (long-lived) thread."""
    with EmbeddedNatsCluster(3, name="autellix-test") as c:
        yield c


@pytest.fixture(scope="module")
def cluster_settings(
    cluster: EmbeddedNatsCluster, make_database: Callable[..., str], namespace: str
) -> Settings:
    return Settings(
        nats_url=cluster.url,
        database_url=make_database(),
        namespace=f"{namespace}_natscl",
        js_replicas=3,
    )


@pytest_asyncio.fixture(scope="module")
async def stack(
    cluster_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    s = Stack(cluster_settings, tmp_path_factory.mktemp("logs"))
    s.start("frontend", "frontend")
    for name in ("sched-a", "sched-b"):
        s.start(name, "scheduler", "--replica", name)
    for e in ENGINES:
        s.start_engine(e, "--max-batch", "8", "--token-latency", "0.01")
    async with s.running():
        yield s


async def test_every_stream_and_consumer_has_three_replicas(stack: Stack) -> None:
    nc = await connect(stack.settings.nats_url or "")
    try:
        js = nc.jetstream()
        for cfg in bus.stream_configs(stack.subjects):
            info = await js.stream_info(cfg.name or "")
            assert info.config.num_replicas == 3, cfg.name
            assert info.cluster is not None and len(info.cluster.replicas or []) == 2, cfg.name
        for consumer in await js.consumers_info(stack.subjects.calls_stream):
            assert consumer.cluster is not None and len(consumer.cluster.replicas or []) == 2
    finally:
        await nc.close()


async def test_a_service_start_keeps_the_operators_replicas(
    cluster: EmbeddedNatsCluster, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unset `AUTELLIX_JS_REPLICAS`: create R1, keep an R3 set by hand; set: it wins."""
    monkeypatch.delenv("AUTELLIX_JS_REPLICAS", raising=False)
    subjects = Subjects(f"{namespace}_natsop")
    nc = await connect(cluster.url)
    try:
        js = nc.jetstream()
        await bus.ensure_streams(js, subjects)
        name = subjects.calls_stream
        assert (await js.stream_info(name)).config.num_replicas == 1
        by_hand = replace((await js.stream_info(name)).config, num_replicas=3)
        await js.update_stream(by_hand)
        await bus.ensure_streams(js, subjects)  # what every service does at start
        assert (await js.stream_info(name)).config.num_replicas == 3
        await bus.ensure_streams(js, subjects, replicas=1)
        assert (await js.stream_info(name)).config.num_replicas == 1
    finally:
        for cfg in bus.stream_configs(subjects):
            await js.delete_stream(cfg.name or "")
        await nc.close()


async def test_streamed_calls_survive_a_sigkilled_server(
    stack: Stack, cluster: EmbeddedNatsCluster
) -> None:
    plan = FailoverPlan(
        rate_per_s=RATE_PER_S, load_s=LOAD_S, kill_at_s=KILL_AT_S, down_s=DOWN_S,
        silence_s=SILENCE_S,
    )  # fmt: skip
    run = await run_failover(cluster, stack.subjects, plan)
    r = run.result
    print(f"\ncluster failover: {r}")
    assert r["lost"] == 0 and r["duplicated"] == 0 and r["failed_explicitly"] == 0, r
    for c in run.calls:  # every call ran to its length, once
        (final,) = c.terminal
        assert isinstance(final, CallFinal)
        assert final.finish_reason == "length"
        assert final.usage.completion_tokens == c.request.sampling.max_tokens
    assert r["recovery_s"] is not None and r["recovery_s"] <= 5.0
