"""`nats_failover`: a steady mixed load while the NATS server leading the calls stream is
SIGKILLed and, `down_s` later, started again; what happened to every call.

Shared by `autellix bench cluster` and tests/stack/test_nats_cluster.py (which asserts the
goals: nothing lost or answered twice, recovery within 5 s). The load resubmits calls silent
for `silence_s` under their `client_call_id` (`load.SteadyLoad`), as a careful client does.

`recovery_s`: from the kill to the first answer of a call submitted after it (the first moment
new work is served again). `server_back_s`: from the kill until the restarted server is healthy.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from autellix.bench.cluster.load import LoadCall, SteadyLoad, mixed_request
from autellix.local.nats_cluster import EmbeddedNatsCluster
from autellix.runtime.settings import nats_servers
from autellix.wire.protocol import Subjects


@dataclass(frozen=True)
class FailoverPlan:
    rate_per_s: float = 12.0
    load_s: float = 7.0
    kill_at_s: float = 2.0
    down_s: float = 2.0
    silence_s: float = 3.0
    settle_s: float = 60.0
    prefix: str = "fail"


@dataclass
class FailoverRun:
    """The outcome (`result`, what cluster.json records) and the calls, for closer checks."""

    result: dict[str, Any]
    calls: list[LoadCall]


async def connect(url: str) -> Any:
    """A client connection that reconnects to whichever server of `url`'s list is up."""
    import nats

    return await nats.connect(
        servers=nats_servers(url), max_reconnect_attempts=-1, reconnect_time_wait=0.2
    )


async def calls_stream_leader(js: Any, subjects: Subjects, cluster: EmbeddedNatsCluster) -> int:
    """Index in `cluster.nodes` of the server leading the calls stream (the one to kill)."""
    info = (await js.stream_info(subjects.calls_stream)).cluster
    assert info is not None, "the calls stream is not clustered"
    return next(i for i, n in enumerate(cluster.nodes) if n.server_name == info.leader)


async def run_failover(
    cluster: EmbeddedNatsCluster, subjects: Subjects, plan: FailoverPlan | None = None
) -> FailoverRun:
    """Load the stack behind `subjects` on `cluster`; kill and restart its calls leader."""
    plan = plan or FailoverPlan()
    nc = await connect(cluster.url)
    load = await SteadyLoad(nc, subjects, resubmit_after_s=plan.silence_s).start()
    victim = await calls_stream_leader(nc.jetstream(), subjects, cluster)
    killed_at = restarted_at = 0.0

    def on_tick(elapsed: float) -> None:
        nonlocal killed_at, restarted_at
        if not killed_at and elapsed >= plan.kill_at_s:
            cluster.kill(victim)
            killed_at = time.monotonic()
        if killed_at and not restarted_at and time.monotonic() - killed_at >= plan.down_s:
            cluster.nodes[victim].restart()  # spawned from this (long-lived) thread
            restarted_at = time.monotonic()

    try:
        calls = await load.run(
            plan.rate_per_s, plan.load_s, lambda i: mixed_request(i, plan.prefix), on_tick=on_tick
        )
        if killed_at and not restarted_at:  # the load ended before the server's down time
            await asyncio.sleep(max(0.0, killed_at + plan.down_s - time.monotonic()))
            cluster.nodes[victim].restart()
        await asyncio.to_thread(cluster.wait_healthy)
        healthy_at = time.monotonic()
        await load.settle(calls, plan.settle_s)
    finally:
        await load.stop()
        await nc.close()
    after = [c for c in calls if c.submitted >= killed_at and c.finished is not None]
    recovery = min(c.finished for c in after if c.finished) - killed_at if after else None
    latencies = [c.latency_s for c in calls if c.latency_s is not None]
    outcome = load.outcome(calls)
    result: dict[str, Any] = {
        **outcome.as_dict(),
        "recovery_s": recovery,
        "server_back_s": healthy_at - killed_at if killed_at else None,
        "slowest_call_s": max(latencies) if latencies else None,
        "killed_server": cluster.nodes[victim].server_name,
        "plan": dict(plan.__dict__),
        "goals": {
            "lost_0": outcome.lost == 0,
            "duplicated_0": outcome.duplicated == 0,
            "recovery_le_5s": recovery is not None and recovery <= 5.0,
        },
    }
    return FailoverRun(result=result, calls=calls)
