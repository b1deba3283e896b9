"""`pgbouncer`: the same steady mixed load on Postgres directly and through PgBouncer in
transaction pooling mode (`AUTELLIX_PG_POOL_MODE=transaction`), latency side by side.

Each round runs every mode (`MODES`), each on a fresh deployment (frontend, two schedulers, two
SIMULATED engines), in rotated order (round r starts with mode r mod 3), so drift on a shared
machine falls on all alike. Per mode the rounds' calls are pooled: client latency (submit → final)
p50 / p99, accept → engine start p50 / p99 from Postgres, and what happened to every call
(everything must still be answered exactly once through the pooler).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autellix.bench.cluster.deployment import deployment, dispatch_latencies
from autellix.bench.cluster.load import SteadyLoad, mixed_request
from autellix.bench.reporting import pct
from autellix.local.pgbouncer import PgBouncer
from autellix.local.stack import EngineConfig, StackConfig
from autellix.store.db import POOL_MODE_ENV

#: direct: Postgres itself, the services' session settings (scheduler and engines commit
#: asynchronously, JIT off, named prepared statements); direct-txn-settings: Postgres itself but
#: with what transaction pooling mode allows (no startup settings, so every commit is
#: synchronous; no prepared statements); pgbouncer: the same through PgBouncer. The middle one
#: tells what the settings cost from what the pooler's hop costs.
MODES = ("direct", "direct-txn-settings", "pgbouncer")
#: set on the database in both transaction-mode runs, as docs/deploy.md tells operators to set
#: them on the role: the services send them at connect time only outside transaction mode
TXN_DATABASE_SETTINGS = {"jit": "off"}
ENGINE_ARGS = ("--token-latency", "0.005")


@dataclass
class PoolerPlan:
    rounds: int = 2
    rate_per_s: float = 20.0
    load_s: float = 5.0
    pool_size: int = 8
    log_dir: Path | None = None


@contextlib.contextmanager
def _env(key: str, value: str | None) -> Iterator[None]:
    """`key` set (or unset) for this process and the services it starts, restored after."""
    old = os.environ.get(key)
    if value is None:
        os.environ.pop(key, None)
    else:
        os.environ[key] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


async def _one(
    nats_url: str, admin_url: str, plan: PoolerPlan, mode: str, bouncer: PgBouncer, tag: str
) -> dict[str, Any]:
    import nats

    config = StackConfig(
        engines=[EngineConfig("sim", 8, ENGINE_ARGS) for _ in range(2)],
        schedulers=2,
        ready_timeout_s=180.0,
        log_dir=plan.log_dir / tag if plan.log_dir else None,
    )
    pooled = bouncer.url_for(admin_url).rsplit("/", 1)[0] + "/{db}" if mode == "pgbouncer" else None
    # what docs/deploy.md asks of an operator behind a transaction pooler: the settings the
    # services cannot send at connect time, on the database (there: on the role)
    settings = None if mode == "direct" else dict(TXN_DATABASE_SETTINGS)
    with _env(POOL_MODE_ENV, None if mode == "direct" else "transaction"):
        async with deployment(
            nats_url, admin_url, config, pooled_url=pooled, tag="pb", database_settings=settings
        ) as dep:
            nc = await nats.connect(nats_url)
            load = await SteadyLoad(nc, dep.stack.subjects).start()
            try:
                calls = await load.run(
                    plan.rate_per_s, plan.load_s, lambda i: mixed_request(i, tag)
                )
                await load.settle(calls, 60.0, grace_s=0.5)
            finally:
                await load.stop()
                await nc.close()
            db = await dispatch_latencies(dep.direct_url, f"{tag}-")
            stats = _bouncer_stats(bouncer, dep.direct_url) if pooled else {}
    lat = [1000 * c.latency_s for c in calls if c.latency_s is not None]
    return {
        "mode": mode,
        "latencies_ms": lat,
        **load.outcome(calls).as_dict(),
        **db,
        **({"pgbouncer_stats": stats} if stats else {}),
    }


async def pooler_floor(direct_url: str, pooled_url: str, n: int = 300) -> dict[str, float]:
    """What the pooler's hop alone costs: `SELECT 1` round trips on one connection without
    prepared statements (ms each), directly and through PgBouncer, interleaved in 3 rounds."""
    import asyncpg

    from autellix.runtime.settings import asyncpg_dsn

    out: dict[str, list[float]] = {"direct": [], "pgbouncer": []}
    for r in range(3):
        for mode in (("direct", "pgbouncer"), ("pgbouncer", "direct"))[r % 2]:
            url = direct_url if mode == "direct" else pooled_url
            conn = await asyncpg.connect(asyncpg_dsn(url), statement_cache_size=0)
            try:
                t0 = time.perf_counter()
                for _ in range(n):
                    await conn.fetchval("SELECT 1")
                out[mode].append(1000 * (time.perf_counter() - t0) / n)
            finally:
                await conn.close()
    return {f"{m}_ms_per_query": min(v) for m, v in out.items()}


def _bouncer_stats(bouncer: PgBouncer, database_url: str) -> dict[str, float]:
    """PgBouncer's own averages for the deployment's database (`SHOW STATS`, microseconds):
    time a transaction and a query took on the server, and time clients waited for a server
    connection. Where the pooled latency goes."""
    name = database_url.rsplit("/", 1)[-1].split("?")[0]
    try:
        rows = bouncer.show("STATS")
    except Exception:
        return {}
    for row in rows:
        if row.get("database") == name:
            keys = ("avg_xact_time", "avg_query_time", "avg_wait_time", "total_xact_count")
            return {k: float(row[k]) for k in keys if row.get(k, "").replace(".", "").isdigit()}
    return {}


async def run_pooler(
    nats_url: str,
    admin_url: str,
    plan: PoolerPlan,
    *,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Both modes, `plan.rounds` rounds in rotated order; per-round rows and pooled figures."""
    say = progress or (lambda _msg: None)
    runs: list[dict[str, Any]] = []
    t0 = time.monotonic()
    with PgBouncer(admin_url, pool_size=plan.pool_size) as bouncer:
        floor = await pooler_floor(admin_url, bouncer.url_for(admin_url))
        for r in range(plan.rounds):
            k = r % len(MODES)
            order = MODES[k:] + MODES[:k]
            for mode in order:
                say(f"pgbouncer: round {r + 1}, {mode}")
                runs.append(
                    {
                        "round": r,
                        **await _one(
                            nats_url, admin_url, plan, mode, bouncer, f"pb{r}m{MODES.index(mode)}"
                        ),
                    }
                )
    modes: dict[str, Any] = {}
    for mode in MODES:
        mine = [x for x in runs if x["mode"] == mode]
        lat = [v for x in mine for v in x["latencies_ms"]]
        counts = ("submitted", "completed", "failed_explicitly", "lost", "duplicated")
        modes[mode] = {
            **{k: sum(x[k] for x in mine) for k in counts},
            "latency_p50_ms": pct(lat, 50),
            "latency_p99_ms": pct(lat, 99),
            "dispatch_p50_ms": pct([x["dispatch_p50_ms"] for x in mine], 50),
            "dispatch_p99_ms": max(x["dispatch_p99_ms"] for x in mine),
        }
    d, t, p = modes["direct"], modes["direct-txn-settings"], modes["pgbouncer"]
    for x in runs:
        lat = x.pop("latencies_ms")
        x["latency_p50_ms"], x["latency_p99_ms"] = pct(lat, 50), pct(lat, 99)
    return {
        "plan": {k: v for k, v in plan.__dict__.items() if k != "log_dir"},
        "runs": runs,
        "modes": modes,
        "pooled_over_direct": {
            "latency_p50": p["latency_p50_ms"] / d["latency_p50_ms"],
            "latency_p99": p["latency_p99_ms"] / d["latency_p99_ms"],
        },
        "pooled_over_same_settings_direct": {
            "latency_p50": p["latency_p50_ms"] / t["latency_p50_ms"],
            "latency_p99": p["latency_p99_ms"] / t["latency_p99_ms"],
        },
        "behaviour_holds": p["lost"] == 0
        and p["duplicated"] == 0
        and p["failed_explicitly"] == 0
        and p["completed"] == p["submitted"],
        "select1_floor": floor,
        "wall_s": time.monotonic() - t0,
    }
