"""The floor of the control-plane path: the same hops with none of Autellix's logic.

Why: `autellix bench overhead` measures what the real frontend -> scheduler -> engine path adds
per call (issue 5's p50 target is 2 ms). This script measures what the *shape* of that path
costs on the same machine with the same libraries (nats-py, asyncpg, uvloop), so the gap between
the two is what our own code adds and the floor is what no optimisation of our code can beat:

    client --NATS--> frontend: INSERT call; reply "accepted"; forward
           --hop A--> scheduler: SELECT call; UPDATE -> dispatched; forward
           --hop B--> engine: UPDATE -> finished; reply "final" --NATS--> client

Four processes (client, frontend, scheduler, engine; each a real OS process on uvloop), one
Postgres round trip per box as in the real path (the real scheduler does two: load, then the
conditional transition), NATS in between. Hops A and B are either JetStream (what the stack
uses: work-queue streams, pull consumers, PubAcks awaited before acking the input) or core NATS
(the fast path an optimisation could add).

    python bench/overhead/floor.py --out bench/overhead/floor [--calls 1000]

Starts its own embedded NATS + Postgres like `autellix bench overhead` unless `--nats-url` /
`--database-url` are given; writes `floor.json` and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS floor_calls (
    id text PRIMARY KEY, program_id text NOT NULL, status text NOT NULL, request jsonb NOT NULL,
    engine_id text, accepted_at timestamptz NOT NULL DEFAULT now(),
    dispatched_at timestamptz, finished_at timestamptz, output jsonb)
"""


async def _pool(dsn: str) -> Any:
    import asyncpg

    return await asyncpg.create_pool(dsn, min_size=1, max_size=4, server_settings={"jit": "off"})


async def _consumer(nc: Any, js: Any, stream: str, subject: str, durable: str) -> Any:
    from autellix import bus

    await bus.ensure_consumer(js, stream, durable, subject)
    consumer = bus.PullConsumer(nc, stream, durable)
    await consumer.start()
    return consumer


async def role(name: str, nats_url: str, dsn: str, ns: str, mode: str) -> None:
    """One box of the path. Messages are JSON: {"id", "reply"} plus the request for submits."""
    import nats

    from autellix.services.scheduler.jspub import AsyncPublisher, Outgoing

    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    pool = await _pool(dsn)
    pub = AsyncPublisher(nc)
    await pub.start()

    async def forward(subject: str, body: dict[str, Any], msg_id: str) -> None:
        data = json.dumps(body).encode()
        if mode == "core":
            await nc.publish(subject, data)
        else:  # stored and acknowledged before the input is acked, as in the stack
            await pub.publish([Outgoing(subject, data, msg_id)])

    async def frontend(msg: Any) -> None:
        req = json.loads(msg.data)
        call_id = uuid.uuid4().hex
        await pool.execute(
            "INSERT INTO floor_calls (id, program_id, status, request) VALUES ($1,$2,'queued',$3)",
            call_id,
            req["program_id"],
            msg.data.decode(),
        )
        await nc.publish(msg.reply, json.dumps({"type": "accepted", "call_id": call_id}).encode())
        await forward(f"{ns}.sched", {"id": call_id, "reply": msg.reply}, call_id)

    async def scheduler(data: bytes) -> None:
        m = json.loads(data)
        row = await pool.fetchrow("SELECT * FROM floor_calls WHERE id = $1", m["id"])
        assert row is not None and row["status"] == "queued"
        await pool.execute(
            "UPDATE floor_calls SET status='dispatched', engine_id='e0', dispatched_at=now() "
            "WHERE id=$1 AND status='queued'",
            m["id"],
        )
        await forward(f"{ns}.engine", m, m["id"] + ":0")

    async def engine(data: bytes) -> None:
        m = json.loads(data)
        await pool.execute(
            "UPDATE floor_calls SET status='finished', finished_at=now(), output=$2 "
            "WHERE id=$1 AND status='dispatched'",
            m["id"],
            "[1]",
        )
        final = {"type": "final", "call_id": m["id"], "token_ids": [1], "finish_reason": "length"}
        await nc.publish(m["reply"], json.dumps(final).encode())

    if name == "frontend":
        await nc.subscribe(f"{ns}.submit", cb=frontend)
    else:
        handler = scheduler if name == "scheduler" else engine
        subject = f"{ns}.{'sched' if name == 'scheduler' else 'engine'}"
        if mode == "core":

            async def cb(msg: Any) -> None:
                await handler(msg.data)

            await nc.subscribe(subject, cb=cb)
        else:
            stream = f"{ns}_{name}".upper()
            consumer = await _consumer(nc, js, stream, subject, name)

            async def loop() -> None:
                while True:
                    msg = await consumer.next(None)
                    await handler(msg.data)
                    await msg.ack()

            asyncio.get_running_loop().create_task(loop())
    await nc.flush()
    print("ready", flush=True)
    await asyncio.Event().wait()


async def measure(nats_url: str, dsn: str, mode: str, calls: int, warmup: int) -> dict[str, Any]:
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
    for name in ("frontend", "scheduler", "engine"):
        p = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--role", name, "--nats-url", nats_url,
            "--database-url", dsn, "--ns", ns, "--mode", mode,
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
                (k for k in ("frontend", "scheduler", "engine") if f"--role {k}" in cmd),
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
    lat.sort()
    return {
        "mode": mode,
        "calls": calls,
        "p50_ms": lat[len(lat) // 2],
        "p90_ms": lat[int(len(lat) * 0.9)],
        "p99_ms": lat[int(len(lat) * 0.99)],
        "mean_ms": statistics.fmean(lat),
        "cpu_ms_per_call": cpu_ms,
    }


async def main(args: argparse.Namespace) -> None:
    import asyncpg

    from autellix.embedded import create_database, drop_database
    from autellix.livebench.stack import Infra

    async with Infra(args.nats_url, args.database_url) as infra:
        assert infra.nats_url and infra.database_url
        db = f"autellix_floor_{uuid.uuid4().hex[:8]}"
        dsn = await create_database(infra.database_url, db)
        try:
            from autellix.store.db import asyncpg_dsn

            conn = await asyncpg.connect(asyncpg_dsn(dsn))
            await conn.execute(SCHEMA)
            await conn.close()
            results = []
            for rep in range(args.repeats):
                for mode in ("jetstream", "core"):
                    r = await measure(infra.nats_url, asyncpg_dsn(dsn), mode, args.calls, 50)
                    r["repeat"] = rep
                    results.append(r)
                    cpu = " ".join(f"{k} {v:.2f}" for k, v in r["cpu_ms_per_call"].items())
                    print(
                        f"{mode:10s} p50 {r['p50_ms']:.2f} ms  p90 {r['p90_ms']:.2f}  "
                        f"p99 {r['p99_ms']:.2f}  CPU ms/call: {cpu}",
                        flush=True,
                    )
        finally:
            await drop_database(infra.database_url, db)
        out = {
            "what": "floor of the frontend->scheduler->engine path: same hops, no Autellix logic",
            "machine_cpus": os.cpu_count(),
            "load_avg_end": os.getloadavg()[0],
            "servers": infra.describe(),
            "results": results,
        }
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "floor.json").write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {args.out / 'floor.json'}")


def cli() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path)
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--nats-url")
    ap.add_argument("--database-url")
    ap.add_argument("--role")
    ap.add_argument("--ns")
    ap.add_argument("--mode", choices=("core", "jetstream"))
    args = ap.parse_args()
    import uvloop

    if args.role:
        uvloop.run(role(args.role, args.nats_url, args.database_url, args.ns, args.mode))
    else:
        uvloop.run(main(args))


if __name__ == "__main__":
    cli()
