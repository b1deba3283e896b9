"""`autellix bench cluster` end to end: the three parts in turn, one payload (`cluster.json`).

The NATS and Postgres servers are the given ones (`--nats-url`, `--database-url`: an admin URL,
the parts create their databases beside it) or one embedded pair for the whole run
(`autellix.bench.stack.Infra`); the failover part always starts its own three-server cluster.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autellix.bench.cluster.failover import FailoverPlan, run_failover
from autellix.bench.cluster.pooler import PoolerPlan, run_pooler
from autellix.bench.cluster.scaling import ScalingPlan, run_engines_scaling, summarize
from autellix.bench.report import BANNER
from autellix.bench.reporting import command_line, load_avg, machine
from autellix.bench.stack import Infra

PARTS = ("engines_scaling", "nats_failover", "pgbouncer")


@dataclass
class ClusterConfig:
    scaling: ScalingPlan = field(default_factory=ScalingPlan)
    failover: FailoverPlan = field(default_factory=FailoverPlan)
    pooler: PoolerPlan = field(default_factory=PoolerPlan)
    parts: tuple[str, ...] = PARTS
    log_dir: Path | None = None


async def _failover_part(admin_url: str, plan: FailoverPlan, log_dir: Path | None) -> dict:
    from autellix.bench.cluster.deployment import deployment
    from autellix.local.nats_cluster import EmbeddedNatsCluster
    from autellix.local.stack import EngineConfig, StackConfig

    config = StackConfig(
        engines=[EngineConfig("sim", 8, ("--token-latency", "0.01")) for _ in range(2)],
        schedulers=2,
        ready_timeout_s=180.0,
        log_dir=log_dir / "nats-failover" if log_dir else None,
    )
    with EmbeddedNatsCluster(3, name="autellix-bench") as cluster:
        async with deployment(cluster.url, admin_url, config, js_replicas=3, tag="nf") as dep:
            run = await run_failover(cluster, dep.stack.subjects, plan)
    return {"servers": 3, "js_replicas": 3, "schedulers": 2, "engines": 2, **run.result}


async def run_cluster(
    cfg: ClusterConfig,
    *,
    nats_url: str | None = None,
    database_url: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Every part `cfg.parts` names; the cluster.json payload."""
    say = progress or (lambda _msg: None)
    t0 = time.perf_counter()
    load0 = load_avg()
    payload: dict[str, Any] = {
        "banner": BANNER,
        "benchmark": "cluster",
        "command": command_line(),
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    async with Infra(nats_url, database_url) as infra:
        assert infra.nats_url and infra.database_url
        payload["servers"] = infra.describe()
        if "engines_scaling" in cfg.parts:
            plan = cfg.scaling
            plan.log_dir = plan.log_dir or (cfg.log_dir / "scaling" if cfg.log_dir else None)
            rows = await run_engines_scaling(infra.nats_url, infra.database_url, plan, progress=say)
            payload["engines_scaling"] = {
                "plan": {k: v for k, v in plan.__dict__.items() if k != "log_dir"},
                "rows": rows,
                **summarize(rows),
            }
        if "nats_failover" in cfg.parts:
            say("nats failover: 3 servers, calls leader SIGKILLed and restarted")
            payload["nats_failover"] = await _failover_part(
                infra.database_url, cfg.failover, cfg.log_dir
            )
        if "pgbouncer" in cfg.parts:
            plan_p = cfg.pooler
            plan_p.log_dir = plan_p.log_dir or (cfg.log_dir / "pgbouncer" if cfg.log_dir else None)
            payload["pgbouncer"] = await run_pooler(
                infra.nats_url, infra.database_url, plan_p, progress=say
            )
    payload["wall_s"] = time.perf_counter() - t0
    payload["load_avg"] = {"start": load0, "end": load_avg()}
    return payload
