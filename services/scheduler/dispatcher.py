"""Turn `ScheduleCall`s into `Dispatch`es, exactly once in effect, whatever crashes — in batches.

Handling a batch of ScheduleCall messages (`Dispatcher.handle_batch`; every message that is
available when a batch starts joins it, up to `batch` — one message when the system is quiet):

1. load all their calls (and programs, and exact-ATLAS parents) from Postgres: one query;
2. by each call's status:
   * finished / failed / running / preempted → nothing to do: ack;
   * queued → `LivePolicy.decide` (pure policy core: level, order, engine) → all the batch's
     conditional transitions `queued (attempts = k) → dispatched (attempts = k+1, engine,
     level)` with their `dispatch` event rows and program pins: one statement → publish each
     `Dispatch(attempt=k)` to `engine.<id>.q.<level>` on JetStream with `Nats-Msg-Id =
     "<call>:<k>"` (all of the batch at once, PubAcks on one subscription: `jspub.py`), or
     first offered to the engine directly (`transport.direct`: core NATS, JetStream only for
     what the engine did not take) → ack;
   * dispatched → a previous handler (maybe on another replica, maybe killed) made the
     transition but may not have published: publish the same Dispatch again (same message id:
     JetStream drops it if the first one got through) → ack;
3. no live engine → nak with a growing delay (0.5 s up to 2 s; JetStream redelivers it later,
   to any replica) without touching Postgres; after `no_engine_timeout_s` since the call was
   accepted, fail it (`queued → failed`, conditional) and send `CallError(no_engine)` to the
   caller.

Bounded delivery: a Dispatch larger than the bus's max_payload (the frontend refuses such calls,
so only a row written some other way) fails its call with `message_too_large` instead of being
published; and at a message's last delivery (`bus.MAX_DELIVER`, the consumer's max_deliver) a
call that still cannot be handled fails with `undeliverable` (or `no_engine`), so no message is
redelivered forever and every accepted call gets an answer.

Two Postgres round trips per batch, not per call: that is what lets one replica make thousands
of decisions per second (docs/scheduling.md, "Live system").

Crash points (SIGKILL of a scheduler replica) and why nothing is lost or answered twice:

* **before the transition**: the messages were never acked; JetStream redelivers them after
  `ack_wait` (to this replica after a restart, or to another one) and step 2 runs from scratch.
* **after the transition commits, before the publish**: the redelivered message finds the call
  `dispatched` and publishes the Dispatch that was missing (the "dispatched" branch).
* **after the publish, before the ack**: the redelivered message finds it `dispatched` (or
  already `running`/`finished`) and either republishes the same message id, which JetStream's
  duplicate window discards, or does nothing. Beyond that window a second copy may reach the
  engine; the engine drops it (it remembers (call, attempt), and `mark_running` only matches
  once).
* **two replicas on the same message** (redelivery while the first is slow): the conditional
  UPDATE lets exactly one transition succeed; the loser reloads, sees `dispatched`, and
  republishes the same message id (a no-op).
* **no-engine failure**: the `queued → failed` UPDATE matches once, so one CallError at most.

Answers (CallFinal / CallError) come only from the owner of the latest attempt via conditional
updates (see `autellix.store.states`), so redeliveries here can never produce a second answer.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from pydantic import ValidationError

from autellix.runtime import telemetry
from autellix.runtime.service import CrashPoint
from autellix.services.scheduler.decide import Decision, LivePolicy
from autellix.services.scheduler.engines import EngineRegistry
from autellix.services.scheduler.metrics import scheduler_metrics
from autellix.store.dispatch import (
    CallRow,
    DispatchItem,
    load_call,
    load_calls,
    mark_dispatched_many,
)
from autellix.store.finish import fail_call
from autellix.transport import bus
from autellix.transport.direct import DirectGate
from autellix.transport.publisher import AsyncPublisher, Outgoing
from autellix.wire.protocol import (
    CallError,
    ErrorCode,
    ScheduleCall,
    Subjects,
    encode,
)


class Dispatcher:
    def __init__(
        self,
        *,
        pool: Any,
        nc: Any,
        js: JetStreamContext,
        subjects: Subjects,
        registry: EngineRegistry,
        actor: str,
        log: Any,
        policy: LivePolicy | None = None,
        no_engine_timeout_s: float = 60.0,
        retry_delay_s: float = 0.5,
        direct: bool = False,
        direct_timeout_s: float = 1.0,
    ) -> None:
        self.pool = pool
        self.nc = nc
        self.js = js
        self.subjects = subjects
        self.registry = registry
        self.actor = actor
        self.log = log
        self.policy = policy or LivePolicy.build()
        self.no_engine_timeout_s = no_engine_timeout_s
        self.retry_delay_s = retry_delay_s
        self.direct = direct
        self.direct_timeout_s = direct_timeout_s
        self.direct_gate = DirectGate()  # engines that just refused are not offered for a while
        #: told of every engine found gone (`_suspend_gone`): the maintenance reaps it sooner
        self.on_engine_gone: Callable[[str], None] | None = None
        self.dispatched = 0
        self.republished = 0
        self.batches = 0
        self._counter = itertools.count()  # round-robin position
        self._tracing: bool | None = None  # an OTel SDK is installed (decided on first use)
        self._crash = CrashPoint()
        # Dispatches go out as JetStream "async publishes": one PubAck subscription, one
        # timeout per batch (see `jspub.py`); created lazily so tests can build a Dispatcher
        self.publisher = AsyncPublisher(nc)

    async def handle(self, msg: Msg) -> None:
        await self.handle_batch([msg])

    async def handle_batch(self, msgs: list[Msg]) -> None:
        """Decide, record and publish a batch; ack (or nak) every message in it."""
        self.batches += 1
        parsed: list[tuple[ScheduleCall, Msg]] = []
        for msg in msgs:
            try:
                parsed.append((ScheduleCall.model_validate_json(msg.data), msg))
            except ValidationError as exc:
                self.log.error("invalid ScheduleCall dropped", error=str(exc)[:500])
                await msg.term()
        if not parsed:
            return
        if not self.registry.has_live():  # nothing to decide: do not touch Postgres while waiting
            waiting = [(sc, m) for sc, m in parsed if _age_s(m) < self.no_engine_timeout_s]
            for _, m in waiting:
                await self._nak(m)
            parsed = [p for p in parsed if p not in waiting]
            if not parsed:
                return
        # one batch span (its own trace: a batch mixes programs); each call's decision is an
        # `autellix.schedule` span in that call's trace (see `_publish`), linked to the batch
        carriers = {sc.call_id: m.headers for sc, m in parsed}
        with telemetry.span("autellix.dispatch", calls=len(parsed)), telemetry.carriers(carriers):
            outcomes = await self._handle(parsed)
        for (_, msg), outcome in zip(parsed, outcomes, strict=True):
            if outcome == "nak":
                await self._nak(msg)
            else:
                await msg.ack()

    async def _nak(self, msg: Msg) -> None:
        # back off while no engine is live: 0.5 s, 0.75 s, ... at most 2 s between tries
        tries = _delivered(msg)
        if tries >= bus.MAX_DELIVER:  # JetStream would not deliver it again
            await self.give_up([msg], ErrorCode.no_engine, f"no live engine after {tries} tries")
            return
        await msg.nak(delay=min(2.0, self.retry_delay_s * 1.5 ** min(tries - 1, 20)))

    async def give_up(self, msgs: list[Msg], code: ErrorCode, why: str) -> None:
        """Fail the calls of messages that will not be delivered again (their last delivery
        failed, see the module doc) and answer their callers; then drop the messages."""
        for msg in msgs:
            try:
                sc = ScheduleCall.model_validate_json(msg.data)
            except ValidationError:
                await msg.term()
                continue
            await self._fail(sc.call_id, code, f"{why} (delivery {_delivered(msg)})", None)
            with contextlib.suppress(Exception):
                await msg.term()

    async def _fail(
        self, call_id: str, code: ErrorCode, message: str, attempts: int | None
    ) -> None:
        reply_to = await fail_call(
            self.pool,
            call_id=call_id,
            code=code.value,
            message=message,
            actor=self.actor,
            from_statuses=("queued", "dispatched"),
            attempts=attempts,
        )
        if reply_to is not None:
            err = CallError(call_id=call_id, code=code, message=message, retryable=False)
            with contextlib.suppress(Exception):
                await self.nc.publish(reply_to, encode(err))
            self.log.warning("call failed", call_id=call_id, code=code.value, why=message)
            scheduler_metrics().call_failed(code.value)

    async def _deliverable(self, items: list[Outgoing]) -> list[Outgoing]:
        """The items that fit the bus; the others' calls fail with `message_too_large`."""
        limit = self.nc.max_payload
        fits = [it for it in items if len(it.payload) + _HEADER_ROOM <= limit]
        for it in items:
            if len(it.payload) + _HEADER_ROOM > limit:
                call_id, _, attempt = it.msg_id.rpartition(":")
                await self._fail(
                    call_id,
                    ErrorCode.message_too_large,
                    f"its Dispatch is {len(it.payload)} bytes; the bus carries {limit}",
                    int(attempt) + 1,
                )
        return fits

    async def _handle(self, parsed: list[tuple[ScheduleCall, Msg]]) -> list[str]:
        calls = await load_calls(self.pool, list({sc.call_id for sc, _ in parsed}))
        outcomes = ["ack"] * len(parsed)
        decided: dict[str, tuple[CallRow, Decision, str]] = {}
        republish: dict[str, CallRow] = {}
        for i, (sc, _) in enumerate(parsed):
            call = calls.get(sc.call_id)
            if call is None:
                self.log.warning("ScheduleCall for an unknown call", call_id=sc.call_id)
                continue
            if call.id in decided or call.id in republish:
                continue  # the same call twice in one batch (a redelivery): handled once
            if call.status == "queued":
                decision = self.policy.decide(call, self.registry, next(self._counter))
                if decision is None:
                    outcomes[i] = await self._no_engine(call)
                    continue
                self.registry.note_dispatch(decision.engine_id)
                decided[call.id] = (call, decision, sc.reason)
            elif call.status == "dispatched" and call.engine_id is not None and call.attempts > 0:
                republish[call.id] = call
        if decided:
            for _ in decided:
                self._crash("before_transition")
            done = await mark_dispatched_many(
                self.pool,
                [
                    DispatchItem(
                        call_id=call.id,
                        attempt=call.attempts,
                        engine_id=d.engine_id,
                        level=d.level,
                        priority=d.priority,
                        reason=f"{why}: {d.reason}",
                        rank_base=d.rank_base,
                        tiebreak=d.tiebreak,
                        aged=d.aged,
                        value=d.value,
                        program_id=call.program_id,
                        pin=d.pin,
                        restart=d.restart,
                    )
                    for call, d, why in decided.values()
                ],
                actor=self.actor,
            )
            publishes = []
            for call_id, (call, d, _) in decided.items():
                if call_id in done:
                    self._crash("after_transition")
                    publishes.append(self._outgoing(call, attempt=call.attempts, decision=d))
                else:
                    lost = await load_call(self.pool, call_id)  # lost a race: see who won
                    if lost is not None and lost.status == "dispatched" and lost.attempts > 0:
                        republish[call_id] = lost
            await self._deliver(publishes)
            for _ in publishes:
                self._crash("after_publish")
            self.dispatched += len(publishes)
            scheduler_metrics().decided(
                d.level for cid, (_, d, _) in decided.items() if cid in done
            )
        if republish:
            again = [self._outgoing(c, attempt=c.attempts - 1) for c in republish.values()]
            await self._deliver(again)
            self.republished += len(republish)
        return outcomes

    async def _deliver(self, items: list[Outgoing]) -> None:
        """Dispatches to their engines: directly first when enabled, else (and for what is not
        taken) through JetStream; raises if JetStream did not store them (no ack then)."""
        gate = self.direct_gate if self.direct else None
        try:
            await self.publisher.deliver(
                await self._deliverable(items), gate, self.direct_timeout_s
            )
        finally:
            if gate is not None and gate.gone:
                self._suspend_gone(gate.take_gone())

    def _suspend_gone(self, subjects: set[str]) -> None:
        """Engines whose direct subject had no subscriber leave the registry's choices until
        they heartbeat again (`EngineRegistry.suspend`). What was sent there is in their
        JetStream queue, as before: a restarted engine hands it back, the reaper otherwise."""
        for engine_id in self.registry.ids():
            if self.subjects.dispatch_direct(engine_id) in subjects:
                self.registry.suspend(engine_id)
                if self.on_engine_gone is not None:
                    self.on_engine_gone(engine_id)

    def _dispatch(
        self,
        call: CallRow,
        *,
        attempt: int,
        decision: Decision | None,
        trace: dict[str, str] | None = None,
    ) -> bytes:
        """The `Dispatch` message, encoded. Built as JSON directly around the request exactly
        as stored (the frontend validated it; the engine validates the whole Dispatch again):
        re-validating and re-serializing every CallRequest here was a third of the
        scheduler's CPU (profiled). `tests/stack/test_live_units.py` checks it equals
        `encode(Dispatch(...))`."""
        if decision is not None:
            level, priority, tiebreak = decision.level, decision.priority, decision.tiebreak
        else:  # republish what the row says was decided
            level, priority, tiebreak = call.level, call.priority, call.tiebreak
        return dispatch_payload(
            call,
            attempt=attempt,
            level=level,
            priority=priority,
            tiebreak=tiebreak,
            trace=telemetry.inject() if trace is None else trace,
            min_run_tokens=self.policy.min_run_tokens,
            prefill_weight=self.policy.policy.units.prefill_weight,
        )

    def _outgoing(
        self, call: CallRow, *, attempt: int, decision: Decision | None = None
    ) -> Outgoing:
        """The Dispatch for `engine.<id>.q.<level>`, with its message id (dedupe)."""
        engine_id = decision.engine_id if decision is not None else call.engine_id
        assert engine_id is not None
        if not self._traced():  # no tracing SDK: skip the per-call no-op span (15% of CPU)
            payload = self._dispatch(
                call,
                attempt=attempt,
                decision=decision,
                trace=passthrough_trace(telemetry.carrier_for(call.id)),
            )
        else:
            payload = self._traced_dispatch(call, attempt, decision, engine_id)
        level = decision.level if decision is not None else call.level
        return Outgoing(
            self.subjects.dispatch(engine_id, level),
            payload,
            bus.dispatch_msg_id(call.id, attempt),
            direct_subject=self.subjects.dispatch_direct(engine_id),
        )

    def _traced(self) -> bool:
        if self._tracing is None:
            from opentelemetry import trace

            self._tracing = not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
        return self._tracing

    def _traced_dispatch(
        self, call: CallRow, attempt: int, decision: Decision | None, engine_id: str
    ) -> bytes:
        with telemetry.span(  # the decision, in the call's trace (Dispatch.trace continues it)
            "autellix.schedule",
            context=telemetry.remote_parent(telemetry.carrier_for(call.id), call.program_id),
            links=telemetry.current_links(),
            call_id=call.id,
            program_id=call.program_id,
            attempt=attempt,
            engine_id=engine_id,
            level=decision.level if decision is not None else call.level,
            priority=decision.priority if decision is not None else call.priority,
            reason=decision.reason if decision is not None else "republish",
            aged=decision.aged if decision is not None else None,
        ):
            return self._dispatch(call, attempt=attempt, decision=decision)

    async def _no_engine(self, call: CallRow) -> str:
        waited = (datetime.now(UTC) - call.accepted_at).total_seconds()
        if waited < self.no_engine_timeout_s:
            return "nak"
        message = f"no live engine for {waited:.0f}s (limit {self.no_engine_timeout_s:.0f}s)"
        reply_to = await fail_call(
            self.pool,
            call_id=call.id,
            code=ErrorCode.no_engine.value,
            message=message,
            actor=self.actor,
            from_statuses=("queued",),
            attempts=call.attempts,
        )
        if reply_to is not None:
            err = CallError(
                call_id=call.id, code=ErrorCode.no_engine, message=message, retryable=True
            )
            await self.nc.publish(reply_to, encode(err))
            self.log.warning("call failed: no engine", call_id=call.id, waited_s=round(waited, 1))
            scheduler_metrics().call_failed(ErrorCode.no_engine.value)
        return "ack"


_HEADER_ROOM = 1024  # what a Dispatch's headers (message id, trace) take of max_payload
_JSON = msgspec.json.Encoder()  # ~10x json.dumps on this dict (measured)
_TRACE_HEADERS = ("traceparent", "tracestate")


def passthrough_trace(carrier: Any) -> dict[str, str]:
    """The caller's W3C trace headers as they came (what a no-op span would inject)."""
    if not carrier:
        return {}
    return {k: v for k, v in carrier.items() if k.lower() in _TRACE_HEADERS}


def dispatch_payload(
    call: CallRow,
    *,
    attempt: int,
    level: int,
    priority: float,
    tiebreak: float,
    trace: dict[str, str],
    min_run_tokens: int = 0,
    prefill_weight: float = 0.0,
) -> bytes:
    """`encode(Dispatch(...))` for a loaded call, without a CallRequest round trip."""
    resumed = bool(call.output_token_ids)
    fields: dict[str, Any] = {
        "type": "dispatch",
        "call_id": call.id,
        "program_id": call.program_id,
        "thread_id": call.thread_id,
        "reply_to": call.reply_to,
        "level": level,
        "priority": priority,
        "attempt": attempt,
        "resume_token_ids": list(call.output_token_ids or []),
        "accepted_at": call.accepted_at,
        "trace": trace,
        "tiebreak": tiebreak,
        "min_run_tokens": min_run_tokens,
        "prefill_weight": prefill_weight,
        "resume_service": call.service if resumed else 0.0,
        "resume_run_s": call.run_s if resumed else 0.0,
        "control_seq": call.control_seq,
    }
    head = _JSON.encode(fields)
    # the stored logprobs of the resumed tokens (compact JSON, as the engine wrote them)
    lps = call.logprobs_json if resumed and call.logprobs_json else None
    tail = (b',"resume_logprobs":', lps.encode()) if lps else ()
    return b"".join((head[:-1], *tail, b',"request":', call.request_json.encode(), b"}"))


_delivered = bus.delivered


def _age_s(msg: Msg) -> float:
    """Seconds since the message was stored in the stream (when the call needed a dispatch)."""
    try:
        return (datetime.now(UTC) - msg.metadata.timestamp).total_seconds()
    except Exception:
        return 0.0
