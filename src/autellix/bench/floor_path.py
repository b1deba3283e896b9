"""The boxes of `autellix bench floor`'s path, each run as its own OS process on uvloop.

    client --NATS--> frontend: INSERT call; reply "accepted"; forward
           --hop A--> scheduler: SELECT call; UPDATE -> dispatched; forward
           --hop B--> engine: UPDATE -> finished; reply "final" --NATS--> client

One Postgres round trip per box as in the real path (the real scheduler does two: load, then
the conditional transition), NATS in between, and none of Autellix's logic. Hops A and B are
JetStream (work-queue streams, pull consumers, PubAcks awaited before acking the input, as the
stack's fallback path) or core NATS (`mode`). `autellix.bench.floor` starts the processes:

    python -m autellix.bench.floor_path --role frontend --nats-url ... --database-url ... \
        --ns floorXXXX --mode core
"""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from typing import Any

ROLES = ("frontend", "scheduler", "engine")

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
    from autellix.transport import bus

    await bus.ensure_consumer(js, stream, durable, subject)
    consumer = bus.PullConsumer(nc, stream, durable)
    await consumer.start()
    return consumer


async def role(name: str, nats_url: str, dsn: str, ns: str, mode: str) -> None:
    """One box of the path. Messages are JSON: {"id", "reply"} plus the request for submits."""
    import nats

    from autellix.transport.publisher import AsyncPublisher, Outgoing

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


def main() -> None:
    """Run one box until killed (it prints `ready` once subscribed)."""
    ap = argparse.ArgumentParser(description="One box of the control-plane floor path.")
    ap.add_argument("--role", choices=ROLES, required=True)
    ap.add_argument("--nats-url", required=True)
    ap.add_argument("--database-url", required=True)
    ap.add_argument("--ns", required=True)
    ap.add_argument("--mode", choices=("core", "jetstream"), required=True)
    args = ap.parse_args()
    import uvloop

    uvloop.run(role(args.role, args.nats_url, args.database_url, args.ns, args.mode))


if __name__ == "__main__":
    main()
