"""A scheduler stops choosing an engine whose direct subject has no subscriber (its process is
gone) until that engine heartbeats again, and tells its maintenance to reap it sooner.

Why it matters (`autellix chaos`, engine fault): a SIGKILLed engine stayed a candidate for
`--engine-live` (3 s) after its last heartbeat, so a dead engine of two took half the new calls
meanwhile, each of them stuck until the engine's restart or the reaper.
"""

from __future__ import annotations

from datetime import UTC, datetime

from autellix.services.scheduler.engines import EngineRegistry
from autellix.transport.direct import DirectGate
from autellix.wire.protocol import EngineHeartbeat


def _hb(eid: str) -> EngineHeartbeat:
    return EngineHeartbeat(
        engine_id=eid,
        backend="sim",
        model="m",
        max_batch=8,
        running=0,
        waiting=0,
        kv_cache_usage=0.0,
        at=datetime.now(UTC),
    )


def _live(reg: EngineRegistry) -> list[str]:
    return sorted(e.id for e in reg.live())


def test_a_suspended_engine_is_no_candidate_until_its_next_heartbeat() -> None:
    reg = EngineRegistry(stale_after_s=3.0)
    reg.on_heartbeat(_hb("e0"))
    reg.on_heartbeat(_hb("e1"))
    reg.suspend("e0")
    assert _live(reg) == ["e1"]
    reg.note_dispatch("e0")  # a decision made before the suspension does not bring it back
    assert _live(reg) == ["e1"]
    idx = reg.candidates("m")
    assert idx is not None and sorted(idx.ids()) == ["e1"]
    reg.on_heartbeat(_hb("e0"))  # the restarted engine serves again
    assert _live(reg) == ["e0", "e1"]
    assert sorted(reg.ids()) == ["e0", "e1"]


def test_the_gate_reports_receivers_without_subscribers_once() -> None:
    gate = DirectGate()
    gate.note("eng.a.direct", "busy")
    gate.note("eng.b.direct", "no_responders")
    gate.note("eng.c.direct", "timeout")  # slow, not gone: no suspicion
    assert gate.take_gone() == {"eng.b.direct"}
    assert gate.take_gone() == set()
    assert not gate.open("eng.b.direct")  # and it is paused, as before
