"""`autellix bench floor`: the floor of the control-plane path, the same hops with none of
Autellix's logic.

Why: `autellix bench overhead` measures what the real frontend -> scheduler -> engine path adds
per call. This measures what the *shape* of that path costs on the same machine with the same
libraries (nats-py, asyncpg, uvloop): four processes (this client and the three boxes of
`autellix.bench.floor_path`), one Postgres round trip per box, NATS in between, with the inner
hops through JetStream and then over core NATS. The gap between the two benchmarks is what our
own code adds; the floor is what no optimisation of our code can beat.

Starts its own embedded NATS + Postgres like `autellix bench overhead` unless NATS and Postgres
URLs are given; writes `floor.json`.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autellix.bench.floor_path import ROLES, SCHEMA
from autellix.bench.reporting import command_line, load_avg, pct

MODES = ("jetstream", "core")


@dataclass
class FloorConfig:
    """How many calls to time per setting, after how many warm-up calls, how many times."""

    calls: int = 1000
    warmup: int = 50
    repeats: int = 2


async def measure(nats_url: str, dsn: str, mode: str, calls: int, warmup: int) -> dict[str, Any]:
    """One setting: the boxes started fresh, `warmup` calls, then `calls` sequential one-token
    calls timed by this client, and every process's CPU per call (psutil)."""
    import nats
    from nats.js import api

    ns = f"floor{uuid.uuid4().hex[:8]}"
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    if mode == "jetstream":
        for name, subj in (("scheduler", "sched"), ("engine", "engine")):
            await js.add_stream(
                api.StreamConfig(
                    name=f"{ns}_{name}".upper(),
                    subjects=[f"{ns}.{subj}"],
                    retention=api.RetentionPolicy.WORK_QUEUE,
                    storage=api.StorageType.FILE,
                    duplicate_window=120.0,
                )
            )
    procs = []
    for name in ROLES:
        p = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "autellix.bench.floor_path", "--role", name,
            "--nats-url", nats_url, "--database-url", dsn, "--ns", ns, "--mode", mode,
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        procs.append(p)
    for p in procs:
        assert p.stdout is not None
        line = await asyncio.wait_for(p.stdout.readline(), 60)
        assert line.strip() == b"ready", line
    inbox = nc.new_inbox()
    finals: asyncio.Queue[float] = asyncio.Queue()

    async def on_reply(msg: Any) -> None:
        if b'"final"' in msg.data:
            finals.put_nowait(time.perf_counter())

    await nc.subscribe(inbox, cb=on_reply)
    import psutil

    me = psutil.Process()

    def cpu() -> dict[str, float]:
        """CPU seconds so far by component: this client, the three boxes, NATS, Postgres."""
        t = me.cpu_times()
        out = {"client": t.user + t.system}
        for c in me.children(recursive=True):
            try:
                cmd = " ".join(c.cmdline())
                t = c.cpu_times()
            except psutil.NoSuchProcess:
                continue
            key = next(
                (k for k in ROLES if f"--role {k}" in cmd),
                "nats-server" if "nats-server" in cmd else "postgres" if "postgres" in cmd else "",
            )
            if key:
                out[key] = out.get(key, 0.0) + t.user + t.system
        return out

    lat: list[float] = []
    cpu0: dict[str, float] = {}
    for i in range(calls + warmup):
        if i == warmup:
            cpu0 = cpu()
        body = {"program_id": "p", "prompt_token_ids": [100 + i % 1000], "max_tokens": 1}
        t0 = time.perf_counter()
        await nc.publish(f"{ns}.submit", json.dumps(body).encode(), reply=inbox)
        t1 = await asyncio.wait_for(finals.get(), 10)
        if i >= warmup:
            lat.append((t1 - t0) * 1000)
    cpu1 = cpu()
    cpu_ms = {k: (cpu1.get(k, 0.0) - v) * 1000 / calls for k, v in cpu0.items()}
    cpu_ms["total"] = sum(cpu_ms.values())
    for p in procs:
        p.kill()
        await p.wait()
    if mode == "jetstream":
        for name in ("scheduler", "engine"):
            await js.delete_stream(f"{ns}_{name}".upper())
    await nc.close()
    return {
        "mode": mode,
        "calls": calls,
        "p50_ms": pct(lat, 50),
        "p90_ms": pct(lat, 90),
        "p99_ms": pct(lat, 99),
        "mean_ms": statistics.fmean(lat),
        "cpu_ms_per_call": cpu_ms,
    }


async def run_floor(
    cfg: FloorConfig,
    *,
    nats_url: str | None = None,
    database_url: str | None = None,
    on_result: Callable[[dict[str, Any]], None] = lambda _r: None,
) -> dict[str, Any]:
    """Both settings, alternating, `cfg.repeats` times, in a fresh database; the floor.json
    payload."""
    import asyncpg

    from autellix.bench.stack import Infra
    from autellix.local.embedded import create_database, drop_database
    from autellix.store.db import asyncpg_dsn

    async with Infra(nats_url, database_url) as infra:
        if not (infra.nats_url and infra.database_url):
            raise RuntimeError("bench floor needs NATS and Postgres (given or embedded)")
        db = f"autellix_floor_{uuid.uuid4().hex[:8]}"
        dsn = asyncpg_dsn(await create_database(infra.database_url, db))
        results = []
        try:
            conn = await asyncpg.connect(dsn)
            await conn.execute(SCHEMA)
            await conn.close()
            for rep in range(cfg.repeats):
                for mode in MODES:
                    r = await measure(infra.nats_url, dsn, mode, cfg.calls, cfg.warmup)
                    r["repeat"] = rep
                    results.append(r)
                    on_result(r)
        finally:
            await drop_database(infra.database_url, db)
        return {
            "what": "floor of the frontend->scheduler->engine path: same hops, no Autellix logic",
            "machine_cpus": os.cpu_count(),
            "load_avg_end": load_avg(),
            "servers": infra.describe(),
            "command": command_line(),
            "results": results,
        }


def result_line(r: dict[str, Any]) -> str:
    """One setting's figures on one console line."""
    cpu = " ".join(f"{k} {v:.2f}" for k, v in r["cpu_ms_per_call"].items())
    return (
        f"{r['mode']:10s} p50 {r['p50_ms']:.2f} ms  p90 {r['p90_ms']:.2f}  "
        f"p99 {r['p99_ms']:.2f}  CPU ms/call: {cpu}"
    )


def write_floor(payload: dict[str, Any], out: Path) -> Path:
    """floor.json in `out`; returns its path."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "floor.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path
