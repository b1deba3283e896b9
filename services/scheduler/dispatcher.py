"""Turn one `ScheduleCall` into one `Dispatch`, exactly once in effect, whatever crashes.

Handling a ScheduleCall message (`Dispatcher.handle`):

1. load the call (and its program) from Postgres;
2. by the call's status:
   * finished / failed / running / preempted → nothing to do: ack;
   * queued → `decide()` (the policy seam) → conditional transition
     `queued (attempts = k) → dispatched (attempts = k+1, engine, level)` with a `dispatch`
     event row, one statement → publish `Dispatch(attempt=k)` to `engine.<id>.q.<level>` on
     JetStream with `Nats-Msg-Id = "<call>:<k>"` → ack;
   * dispatched → a previous handler (maybe on another replica, maybe killed) made the
     transition but may not have published: publish the same Dispatch again (same message id:
     JetStream drops it if the first one got through) → ack;
3. no live engine → nak with a growing delay (0.5 s up to 2 s; JetStream redelivers it later,
   to any replica) without touching Postgres; after `no_engine_timeout_s` since the call was
   accepted, fail it (`queued → failed`, conditional) and send `CallError(no_engine)` to the
   caller.

Crash points (SIGKILL of a scheduler replica) and why nothing is lost or answered twice:

* **before the transition**: the message was never acked; JetStream redelivers it after
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
  A crash between that commit and the publish loses the error message (never duplicates it);
  the caller's timeout fires, and resubmitting with its client_call_id replays the stored error.

Answers (CallFinal / CallError) come only from the owner of the latest attempt via conditional
updates (see `store/queries.py`), so redeliveries here can never produce a second answer.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from autellix.services.scheduler.decide import decide
from autellix.services.scheduler.engines import EngineRegistry
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from pydantic import ValidationError

from autellix import bus, telemetry
from autellix.protocol import (
    CallError,
    CallRequest,
    Dispatch,
    ErrorCode,
    ScheduleCall,
    Subjects,
    encode,
)
from autellix.service_runtime import CrashPoint
from autellix.store import queries as q


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
        no_engine_timeout_s: float = 60.0,
        retry_delay_s: float = 0.5,
    ) -> None:
        self.pool = pool
        self.nc = nc
        self.js = js
        self.subjects = subjects
        self.registry = registry
        self.actor = actor
        self.log = log
        self.no_engine_timeout_s = no_engine_timeout_s
        self.retry_delay_s = retry_delay_s
        self.dispatched = 0
        self.republished = 0
        self._crash = CrashPoint()

    async def handle(self, msg: Msg) -> None:
        try:
            sc = ScheduleCall.model_validate_json(msg.data)
        except ValidationError as exc:
            self.log.error("invalid ScheduleCall dropped", error=str(exc)[:500])
            await msg.term()
            return
        with telemetry.span("autellix.dispatch", msg.headers, call_id=sc.call_id):
            outcome = await self._handle(sc, msg)
        if outcome == "nak":
            # back off while no engine is live: 0.5 s, 0.75 s, ... at most 2 s between tries
            tries = _delivered(msg)
            await msg.nak(delay=min(2.0, self.retry_delay_s * 1.5 ** min(tries - 1, 20)))
        else:
            await msg.ack()

    async def _handle(self, sc: ScheduleCall, msg: Msg) -> str:
        if not self.registry.live() and _age_s(msg) < self.no_engine_timeout_s:
            return "nak"  # nothing to decide; do not touch Postgres while waiting for engines
        call = await q.load_call(self.pool, sc.call_id)
        if call is None:
            self.log.warning("ScheduleCall for an unknown call", call_id=sc.call_id)
            return "ack"
        if call.status == "queued":
            decision = decide(call, self.registry.live())
            if decision is None:
                return await self._no_engine(call)
            self._crash("before_transition")
            dispatched_at = await q.mark_dispatched(
                self.pool,
                call_id=call.id,
                attempt=call.attempts,
                engine_id=decision.engine_id,
                level=decision.level,
                priority=decision.priority,
                actor=self.actor,
                reason=f"{sc.reason}: {decision.reason}",
            )
            if dispatched_at is not None:
                self._crash("after_transition")
                self.registry.note_dispatch(decision.engine_id)
                await self._publish(
                    call,
                    attempt=call.attempts,
                    engine_id=decision.engine_id,
                    level=decision.level,
                    priority=decision.priority,
                )
                self._crash("after_publish")
                self.dispatched += 1
                return "ack"
            reloaded = await q.load_call(self.pool, sc.call_id)  # lost a race: see who won
            if reloaded is None:
                return "ack"
            call = reloaded
        if call.status == "dispatched" and call.engine_id is not None and call.attempts > 0:
            await self._publish(
                call,
                attempt=call.attempts - 1,
                engine_id=call.engine_id,
                level=call.level,
                priority=call.priority,
            )
            self.republished += 1
        return "ack"

    async def _publish(
        self,
        call: q.CallRow,
        *,
        attempt: int,
        engine_id: str,
        level: int,
        priority: float,
    ) -> None:
        trace = telemetry.inject()  # the current span: this dispatch, child of the accept
        dispatch = Dispatch(
            call_id=call.id,
            program_id=call.program_id,
            thread_id=call.thread_id,
            reply_to=call.reply_to,
            level=level,
            priority=priority,
            attempt=attempt,
            request=CallRequest.model_validate(call.request),
            resume_token_ids=list(call.output_token_ids or []),
            accepted_at=call.accepted_at,
            trace=trace,
        )
        await bus.publish_js(
            self.js,
            self.subjects.dispatch(engine_id, level),
            encode(dispatch),
            bus.dispatch_msg_id(call.id, attempt),
        )

    async def _no_engine(self, call: q.CallRow) -> str:
        waited = (datetime.now(UTC) - call.accepted_at).total_seconds()
        if waited < self.no_engine_timeout_s:
            return "nak"
        message = f"no live engine for {waited:.0f}s (limit {self.no_engine_timeout_s:.0f}s)"
        reply_to = await q.fail_call(
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
        return "ack"


def _delivered(msg: Msg) -> int:
    try:
        return max(1, msg.metadata.num_delivered)
    except Exception:
        return 1


def _age_s(msg: Msg) -> float:
    """Seconds since the message was stored in the stream (when the call needed a dispatch)."""
    try:
        return (datetime.now(UTC) - msg.metadata.timestamp).total_seconds()
    except Exception:
        return 0.0
