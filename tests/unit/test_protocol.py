"""Wire protocol: subjects route where they should on a real NATS server, parsing never raises,
every reply round-trips, message ids are per attempt."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import nats
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autellix.transport.bus import dispatch_msg_id, schedule_msg_id, stream_configs
from autellix.wire.protocol import (
    CALL_REPLY,
    CallAccepted,
    CallError,
    CallFinal,
    CallRequest,
    EngineHeartbeat,
    EngineInfo,
    ErrorCode,
    ProgramReply,
    Subjects,
    Timing,
    TokenDelta,
    Usage,
    encode,
    parse_call_request,
)


async def test_dispatch_subjects_route_per_engine_and_level(nats_url: str, namespace: str) -> None:
    """The stream's wildcard and each engine's filter catch every level and nothing else (the
    control and heartbeat subjects share the `engine` prefix and must not be captured)."""
    s = Subjects(f"{namespace}_proto")
    nc = await nats.connect(nats_url)
    got: dict[str, list[str]] = {"all": [], "e1": []}

    def recorder(key: str):  # type: ignore[no-untyped-def]
        async def on(msg) -> None:  # type: ignore[no-untyped-def]
            got[key].append(msg.subject)

        return on

    await nc.subscribe(s.dispatch_wildcard(), cb=recorder("all"))
    await nc.subscribe(s.dispatch_all("e1"), cb=recorder("e1"))
    sent = [s.dispatch("e1", 0), s.dispatch("e1", 7), s.dispatch("e2", 3)]
    for subject in [*sent, s.control("e1"), s.heartbeat, s.reports, s.submit]:
        await nc.publish(subject, b"x")
    await nc.flush()
    await asyncio.sleep(0.2)
    await nc.close()
    assert sorted(got["all"]) == sorted(sent)
    assert sorted(got["e1"]) == sorted(sent[:2])


def test_stream_subjects_do_not_overlap() -> None:
    s = Subjects("ns")
    subjects = [subj for cfg in stream_configs(s) for subj in cfg.subjects or []]
    assert len(subjects) == len(set(subjects))
    assert all("." not in (cfg.name or "") for cfg in stream_configs(s))
    with pytest.raises(ValueError):
        Subjects("bad.namespace")


def test_message_ids_name_the_attempt() -> None:
    assert schedule_msg_id("c-1", 0) == "c-1"  # the frontend's publish: the call id
    ids = {schedule_msg_id("c-1", a) for a in range(3)} | {
        dispatch_msg_id("c-1", a) for a in range(3)
    }
    assert len(ids) == 6


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_parse_never_raises_on_bytes(data: bytes) -> None:
    out = parse_call_request(data)
    assert isinstance(out, CallRequest | CallError)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            ["program_id", "thread_id", "prompt", "prompt_token_ids", "messages", "sampling", "v"]
        ),
        json_values,
    )
)
def test_parse_never_raises_on_json_objects(obj: dict) -> None:
    out = parse_call_request(json.dumps(obj).encode())
    assert isinstance(out, CallRequest | CallError)
    if isinstance(out, CallError):
        assert out.code in (ErrorCode.validation_error, ErrorCode.unsupported_version)


def test_every_reply_round_trips() -> None:
    now = datetime.now(UTC)
    replies = [
        CallAccepted(call_id="c", program_id="p", duplicate=True),
        TokenDelta(call_id="c", offset=3, token_ids=[1, 2], text=" a b"),
        CallFinal(
            call_id="c",
            program_id="p",
            finish_reason="length",
            token_ids=[1, 2, 3],
            usage=Usage(prompt_tokens=4, completion_tokens=3, cached_tokens=0),
            timing=Timing(accepted_at=now, finished_at=now, queue_s=0.1, run_s=0.2),
            engine=EngineInfo(engine_id="e", backend="sim", model="simulated"),
        ),
        CallError(call_id="c", code=ErrorCode.no_engine, message="none", retryable=True),
        ProgramReply(program_id="p", status="open"),
    ]
    for r in replies:
        assert CALL_REPLY.validate_json(encode(r)) == r


def test_a_newer_peers_extra_fields_are_ignored_a_callers_typo_is_not() -> None:
    """Compatibility within protocol v1: what services send may grow optional fields, and a peer
    not yet upgraded (a client library, a scheduler replica mid rolling upgrade) still reads it;
    what callers send stays strict, so `max_token` for `max_tokens` is an error, not a default."""
    final = {
        "type": "final",
        "call_id": "c",
        "program_id": "p",
        "finish_reason": "length",
        "token_ids": [1],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "cached_tokens": 0, "new": 1},
        "timing": {
            "accepted_at": "2026-12-06T00:00:00Z",
            "finished_at": "2026-12-06T00:00:01Z",
            "queue_s": 0.1,
            "run_s": 0.9,
        },
        "engine": {"engine_id": "e", "backend": "sim", "model": "m", "gpu": "h200"},
        "from_a_newer_server": {"x": 1},
    }
    parsed = CALL_REPLY.validate_json(json.dumps(final))
    assert isinstance(parsed, CallFinal) and parsed.usage.completion_tokens == 1
    assert "from_a_newer_server" not in parsed.model_dump()
    hb = EngineHeartbeat(
        engine_id="e",
        backend="sim",
        model="m",
        max_batch=4,
        running=1,
        waiting=0,
        at=datetime.now(UTC),
    )
    newer = {**json.loads(encode(hb)), "power_watts": 700}
    assert EngineHeartbeat.model_validate_json(json.dumps(newer)) == hb

    typo = parse_call_request(b'{"program_id": "p", "prompt": "hi", "max_token": 5}')
    assert isinstance(typo, CallError) and typo.code == ErrorCode.validation_error
    assert "max_token" in typo.message
    nested = parse_call_request(
        b'{"program_id": "p", "prompt": "hi", "sampling": {"temprature": 0.5}}'
    )
    assert isinstance(nested, CallError) and "temprature" in nested.message


def test_heartbeat_subject_carries_one_heartbeat_or_a_hosts_batch() -> None:
    """`heartbeats_in` reads both shapes of the heartbeat subject; an empty or oversized
    batch, or any other message, is a validation error (listeners drop it)."""
    from datetime import UTC, datetime

    import pydantic

    from autellix.wire.protocol import (
        MAX_BEATS_PER_MESSAGE,
        EngineHeartbeat,
        EngineHeartbeats,
        encode,
        heartbeats_in,
    )

    def hb(i: int) -> EngineHeartbeat:
        return EngineHeartbeat(
            engine_id=f"h-{i:04d}",
            backend="sim",
            model="m",
            max_batch=8,
            running=i % 3,
            waiting=0,
            at=datetime.now(UTC),
        )

    (one,) = heartbeats_in(encode(hb(1)))
    assert one.engine_id == "h-0001" and one.running == 1
    batch = [hb(i) for i in range(25)]
    got = heartbeats_in(encode(EngineHeartbeats(beats=batch)))
    assert [b.engine_id for b in got] == [b.engine_id for b in batch]
    assert [b.running for b in got] == [b.running for b in batch]
    for bad in (
        b'{"type": "heartbeats", "beats": []}',
        encode(EngineHeartbeats.model_construct(beats=[hb(0)] * (MAX_BEATS_PER_MESSAGE + 1))),
        b'{"type": "report", "engine_id": "x", "at": "2026-01-01T00:00:00Z", "calls": []}',
        b"not json",
    ):
        with pytest.raises(pydantic.ValidationError):
            heartbeats_in(bad)
