"""Direct hops (`autellix.transport.direct`): core NATS offers in front of the two JetStream queues.

* `AsyncPublisher.offer` returns what was not taken, whatever the reason: refused, no receiver,
  no answer in time; `DirectMsg` answers once, the way a JetStream ack/nak would have.
* Through real service processes (real NATS, Postgres, sim engine): with direct hops on, calls
  cross neither JetStream queue (both streams stay empty); a call the scheduler cannot place
  yet (no engine) falls back to the durable queue and is served once an engine comes; a
  scheduler that never answers is bypassed after the direct timeout; with
  `AUTELLIX_DIRECT_HOPS=off` every call takes the JetStream path, as before.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import nats
import pytest
import pytest_asyncio
from nats.js import api as jsapi
from svc_stack import Stack, WireRecorder

from autellix.runtime.settings import Settings
from autellix.transport import direct
from autellix.transport.publisher import AsyncPublisher, Outgoing
from autellix.wire.protocol import CallFinal, CallRequest, SamplingParams, Subjects


def test_settings_from_environment() -> None:
    assert direct.enabled({}) is True
    assert direct.enabled({direct.ENV_DIRECT: "off"}) is False
    assert direct.enabled({direct.ENV_DIRECT: "0"}) is False
    assert direct.enabled({direct.ENV_DIRECT: "on"}) is True
    assert direct.timeout_s(env={}) == direct.DEFAULT_TIMEOUT_S
    assert direct.timeout_s(env={direct.ENV_DIRECT_TIMEOUT: "0.25"}) == 0.25
    log = _Log()
    assert direct.timeout_s(log, {direct.ENV_DIRECT_TIMEOUT: "soon"}) == direct.DEFAULT_TIMEOUT_S
    assert direct.timeout_s(log, {direct.ENV_DIRECT_TIMEOUT: "-1"}) == direct.DEFAULT_TIMEOUT_S
    assert [fields["value"] for _, fields in log.warnings] == ["soon", "-1"]
    assert all(direct.ENV_DIRECT_TIMEOUT in event for event, _ in log.warnings)


class _Log:
    def __init__(self) -> None:
        self.warnings: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.warnings.append((event, fields))


async def test_offer_returns_what_was_not_taken(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    base = f"direct-test.{uuid.uuid4().hex[:8]}"
    answers: list[bytes] = []

    async def taker(msg: Any) -> None:
        m = direct.DirectMsg(nc, msg)
        await m.ack()
        await m.nak()  # a second answer is never sent

    async def naker(msg: Any) -> None:
        await direct.DirectMsg(nc, msg).nak(delay=1.0)

    async def terminator(msg: Any) -> None:
        await direct.DirectMsg(nc, msg).term()

    async def silent(msg: Any) -> None:
        return None

    async def garbler(msg: Any) -> None:  # an answer that is no DirectReply at all
        await nc.publish(msg.reply, b"not json")

    async def record(msg: Any) -> None:
        answers.append(msg.data)

    for name, cb in (
        ("take", taker),
        ("nak", naker),
        ("term", terminator),
        ("silent", silent),
        ("garbled", garbler),
    ):
        await nc.subscribe(f"{base}.{name}", cb=cb)
    pub = AsyncPublisher(nc)
    try:
        items = {
            name: Outgoing(
                f"{base}.js.{name}", name.encode(), name, direct_subject=f"{base}.{name}"
            )
            for name in ("take", "nak", "term", "silent", "nobody", "garbled")
        }
        left = await pub.offer(list(items.values()), timeout_s=0.5)
        assert sorted((o.msg_id, why) for o, why in left) == [
            ("garbled", "error"),
            ("nak", "retry"),
            ("nobody", "no_responders"),
            ("silent", "timeout"),
            ("term", "invalid"),
        ]
        # what comes back keeps its JetStream subject and message id for the fallback
        assert all(o.subject == f"{base}.js.{o.msg_id}" for o, _ in left)
        assert pub.offers == {
            "taken": 1,
            "retry": 1,
            "invalid": 1,
            "timeout": 1,
            "no_responders": 1,
            "error": 1,
        }
        # exactly one answer per DirectMsg, even when the code acks and then naks
        inbox = nc.new_inbox()
        await nc.subscribe(inbox, cb=record)
        await nc.publish(f"{base}.take", b"x", reply=inbox)
        await nc.flush()
        await asyncio.sleep(0.3)
        assert [json.loads(a) for a in answers] == [
            {"type": "direct_reply", "taken": True, "reason": ""}
        ]
        assert await pub.offer([], timeout_s=0.1) == []
    finally:
        await pub.stop()
        await nc.close()


async def test_deliver_stores_what_is_not_taken_and_skips_a_paused_receiver(
    nats_url: str,
) -> None:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    stream = f"DIRECT_{uuid.uuid4().hex[:8]}"
    base = f"direct-deliver.{stream}"
    await js.add_stream(
        jsapi.StreamConfig(name=stream, subjects=[f"{base}.js.*"], storage=jsapi.StorageType.MEMORY)
    )
    offered: list[bytes] = []

    async def busy(msg: Any) -> None:
        offered.append(msg.data)
        await direct.refuse(nc, msg, "busy")

    await nc.subscribe(f"{base}.busy", cb=busy)
    pub = AsyncPublisher(nc)
    gate = direct.DirectGate()
    try:
        for i in range(2):
            item = Outgoing(f"{base}.js.x", b"m%d" % i, f"id-{i}", direct_subject=f"{base}.busy")
            await pub.deliver([item], gate, timeout_s=0.5)
        # the first was offered and refused, the second not offered (busy pause): both stored
        assert offered == [b"m0"] and gate.skipped == 1
        assert (await js.stream_info(stream)).state.messages == 2
        await pub.deliver([Outgoing(f"{base}.js.x", b"m2", "id-2")], None, timeout_s=0.5)
        assert offered == [b"m0"] and (await js.stream_info(stream)).state.messages == 3
    finally:
        await pub.stop()
        await js.delete_stream(stream)
        await nc.close()


def test_gate_pauses_a_receiver_after_a_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(direct.time, "monotonic", lambda: now[0])
    gate = direct.DirectGate()
    assert gate.open("e1")
    gate.note("e1", "retry")  # about one message: no pause
    gate.note("e2", "invalid")
    assert gate.open("e1") and gate.open("e2")
    gate.note("e1", "busy")
    gate.note("e2", "no_responders")
    assert not gate.open("e1") and not gate.open("e2") and gate.open("e3")
    now[0] += direct.PAUSE_S["busy"]
    assert gate.open("e1") and not gate.open("e2")
    now[0] += direct.PAUSE_S["no_responders"]
    assert gate.open("e2")
    assert gate.skipped == 3


# --------------------------------------------------------------------------- through the stack


async def _stream_seq(nats_url: str, stream: str) -> int:
    """How many messages the stream ever stored (work queues delete them once acked)."""
    nc = await nats.connect(nats_url)
    try:
        info = await nc.jetstream().stream_info(stream)
        return int(info.state.last_seq)
    finally:
        await nc.close()


def _req(program: str, i: int) -> CallRequest:
    return CallRequest(
        program_id=program,
        thread_id=f"t{i}",
        prompt_token_ids=[5, 6, 7 + i],
        sampling=SamplingParams(max_tokens=4, ignore_eos=True),
    )


async def _run(wire: WireRecorder, program: str, n: int) -> list[CallFinal]:
    calls = [await wire.submit(_req(program, i)) for i in range(n)]
    await asyncio.wait_for(asyncio.gather(*(c.done.wait() for c in calls)), 60)
    finals = [c.final for c in calls]
    assert [len(f.token_ids) for f in finals] == [4] * n
    assert all(len(c.terminal) == 1 for c in calls)  # answered exactly once on the wire
    return finals


@pytest_asyncio.fixture
async def fresh(
    nats_url: str, make_database: Callable[..., str], namespace: str, tmp_path: Any
) -> AsyncIterator[tuple[Stack, WireRecorder]]:
    ns = f"{namespace}_d{uuid.uuid4().hex[:6]}"
    settings = Settings(nats_url=nats_url, database_url=make_database(), namespace=ns)
    stack = Stack(settings, tmp_path / "logs")
    nc = await nats.connect(nats_url)
    wire = await WireRecorder(nc, Subjects(ns)).start()
    try:
        yield stack, wire
    finally:
        await wire.stop()
        await nc.close()
        await stack.stop()


async def test_direct_hops_skip_both_queues_and_fall_back_without_an_engine(
    fresh: tuple[Stack, WireRecorder], nats_url: str
) -> None:
    stack, wire = fresh
    subjects = stack.subjects
    stack.start("frontend", "frontend")
    stack.start("scheduler", "scheduler", "--retry-delay", "0.2")
    await stack.wait_ready("frontend", "scheduler")
    # no engine yet: the scheduler cannot place it, says so, and the call goes to JetStream
    early = await wire.submit(_req("direct-prog", 99))
    await asyncio.sleep(1.0)
    assert await _stream_seq(nats_url, subjects.calls_stream) == 1
    assert not early.done.is_set()
    stack.start_engine("eng-d", "--backend", "sim")
    await stack.wait_ready("eng-d")
    await asyncio.wait_for(early.done.wait(), 60)
    assert len(early.final.token_ids) == 4
    # with scheduler and engine there, calls take the direct hops only
    await _run(wire, "direct-prog", 6)
    assert await _stream_seq(nats_url, subjects.calls_stream) == 1  # still only the early one
    assert await _stream_seq(nats_url, subjects.dispatch_stream) == 0
    # garbage offered straight to the direct subjects: a clear "invalid", a log line, and
    # the services go on serving
    nc = await nats.connect(nats_url)
    try:
        for subject in (subjects.sched_direct, subjects.dispatch_direct("eng-d")):
            for bad in (b"not json", b'{"type": "schedule"}'):
                answer = await nc.request(subject, bad, timeout=5)
                assert json.loads(answer.data) == {
                    "type": "direct_reply",
                    "taken": False,
                    "reason": "invalid",
                }
    finally:
        await nc.close()
    await _run(wire, "direct-prog", 1)
    await stack.stop()
    sched_log = stack.logs("scheduler")
    assert '"direct_offers": {"taken": 8}' in sched_log, sched_log[-2000:]
    assert sched_log.count("invalid ScheduleCall dropped") == 2
    assert stack.logs("eng-d").count("invalid dispatch message dropped") == 2


async def test_a_silent_scheduler_is_bypassed_after_the_direct_timeout(
    fresh: tuple[Stack, WireRecorder], nats_url: str
) -> None:
    """A receiver in the schedulers' queue group that never answers (hung, or killed between
    taking an offer and answering): the frontend publishes to JetStream after the timeout."""
    stack, wire = fresh
    subjects = stack.subjects
    env = {direct.ENV_DIRECT_TIMEOUT: "0.3"}
    stack.start("frontend", "frontend", env=env)
    stack.start("scheduler", "scheduler", env=env)
    stack.start_engine("eng-s", "--backend", "sim")
    await stack.wait_ready()
    nc = await nats.connect(nats_url)
    swallowed: list[bytes] = []

    async def swallow(msg: Any) -> None:
        swallowed.append(msg.data)

    await nc.subscribe(subjects.sched_direct, queue="scheduler", cb=swallow)
    await nc.flush()
    try:
        await _run(wire, "silent-prog", 12)
    finally:
        await nc.close()
    assert swallowed, "NATS never picked the silent member of the queue group"
    assert await _stream_seq(nats_url, subjects.calls_stream) >= len(swallowed)


async def test_direct_hops_off_uses_jetstream_for_every_call(
    fresh: tuple[Stack, WireRecorder], nats_url: str
) -> None:
    stack, wire = fresh
    subjects = stack.subjects
    env = {direct.ENV_DIRECT: "off"}
    stack.start("frontend", "frontend", env=env)
    stack.start("scheduler", "scheduler", env=env)
    stack.start_engine("eng-o", "--backend", "sim")
    await stack.wait_ready()
    await _run(wire, "off-prog", 5)
    assert await _stream_seq(nats_url, subjects.calls_stream) == 5
    assert await _stream_seq(nats_url, subjects.dispatch_stream) == 5
