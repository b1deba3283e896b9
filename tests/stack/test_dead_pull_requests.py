"""A restarted engine gets the Dispatches its dead predecessor's pull request swallowed at once,
not 30 s later (`bus.drop_dead_deliveries`).

What happened (`autellix chaos`, engine fault, restart in ~1 s): a process that dies leaves its
last pull request registered with nats-server until the request's `expires`; a Dispatch
published meanwhile is delivered into that dead request and comes back only after the
consumer's `ack_wait` (30 s), so its caller waited 30 s although a live engine was there. Here a
NATS process with an outstanding pull request is SIGKILLed, a message is published, and the next
process must receive it within seconds.
"""

from __future__ import annotations

import asyncio
import sys

import nats
import pytest

from autellix.transport import bus
from autellix.wire.protocol import Subjects

ENGINE = "dead-pull-e1"


async def _setup(nats_url: str, namespace: str) -> tuple[Subjects, str]:
    subjects = Subjects(namespace)
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await bus.ensure_streams(js, subjects)
        durable = f"engine-{ENGINE}"
        await bus.ensure_consumer(
            js, subjects.dispatch_stream, durable, subjects.dispatch_all(ENGINE)
        )
    finally:
        await nc.close()
    return subjects, durable


_PULLER = """
import asyncio, sys
import nats
from autellix.transport import bus

async def main(url, stream, durable):
    nc = await nats.connect(url)
    consumer = bus.PullConsumer(nc, stream, durable, expires=20.0)
    await consumer.start()
    msg = await consumer.next(30)  # received, never acked
    print("got" if msg is not None else "nothing", flush=True)
    await asyncio.sleep(60)

asyncio.run(main(*sys.argv[1:]))
"""


async def _dead_puller(nats_url: str, subjects: Subjects, durable: str) -> None:
    """A consumer process that receives a message, does not ack it, and is SIGKILLed."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _PULLER, nats_url, subjects.dispatch_stream, durable,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    assert line.strip() == b"got", line
    proc.kill()
    await proc.wait()


async def _first_message_within(
    nats_url: str, subjects: Subjects, durable: str, *, drop: bool, wait_s: float
) -> bytes | None:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        if drop:
            assert await bus.drop_dead_deliveries(js, subjects.dispatch_stream, durable)
        await bus.ensure_consumer(
            js, subjects.dispatch_stream, durable, subjects.dispatch_all(ENGINE)
        )
        consumer = bus.PullConsumer(nc, subjects.dispatch_stream, durable)
        await consumer.start()
        msg = await consumer.next(wait_s)
        if msg is None:
            return None
        await msg.ack()
        return msg.data
    finally:
        await nc.close()


@pytest.mark.parametrize("drop", [True, False], ids=["consumer made again", "kept"])
async def test_what_a_dead_consumer_held_reaches_the_next_process_at_once(
    nats_url: str, namespace: str, drop: bool
) -> None:
    subjects, durable = await _setup(nats_url, f"{namespace}_{int(drop)}")
    nc = await nats.connect(nats_url)
    try:
        await nc.jetstream().publish(subjects.dispatch(ENGINE, 0), b"dispatch after the death")
    finally:
        await nc.close()
    await _dead_puller(nats_url, subjects, durable)
    got = await _first_message_within(nats_url, subjects, durable, drop=drop, wait_s=5.0)
    if drop:
        assert got == b"dispatch after the death"
    else:  # what the engine had before: the message waits out the 30 s ack_wait
        assert got is None
