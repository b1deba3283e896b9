"""Cancelling a call (`CallCancel`): one conditional Postgres transition, then two messages.

1. `queries.cancel_call`: whatever non-terminal state the call is in (queued, dispatched,
   running, preempted) → `failed` with `error_code = 'cancelled'`, `control_seq` bumped, a
   `fail` event; a call that already ended is left alone (idempotent: a second cancel, or one
   after the end, answers `already_cancelled` / `already_finished`).
2. the caller gets `CallError(cancelled)` on the call's reply subject, now: the frontend owns
   this answer because the statement above made it terminal (nobody else can answer it any
   more: `finish_call` and the engine's `fail_call` match only active calls);
3. if an engine had it (dispatched, running or preempted), that engine gets
   `Control(action="cancel", seq=control_seq)` so it stops generating and frees the batch slot
   at once. Why the row first and not only the Control (the engine would then fail the call
   itself): a Control is core NATS, and one that overtakes its Dispatch or reaches a
   restarting engine is lost; with the row already failed the engine still drops the call at
   its next ownership check (`mark_running`, progress save, `finish_call`), so a cancel never
   depends on the Control arriving. When the engine does apply it, its own `fail_call` matches
   nothing, so the caller still gets exactly one terminal message.

A queued call never reaches an engine afterwards: the schedulers' dispatch transition wants
`queued` and acks the message of a failed call without dispatching it.
"""

from __future__ import annotations

from typing import Any

from autellix.protocol import (
    CallCancel,
    CallCancelReply,
    CallError,
    Control,
    ErrorCode,
    encode,
)
from autellix.services.frontend.accept import FrontendContext
from autellix.store import queries as q

ACTOR = "frontend"


async def cancel_call(ctx: FrontendContext, nc: Any, req: CallCancel) -> CallCancelReply:
    """Cancel one call (see module docstring); safe to repeat."""
    message = "cancelled by the caller" + (f": {req.reason}" if req.reason else "")
    res = await q.cancel_call(
        ctx.pool,
        call_id=req.call_id,
        program_id=req.program_id,
        client_call_id=req.client_call_id,
        message=message,
        actor=ACTOR,
    )
    if res.call_id is None:
        return CallCancelReply(call_id=req.call_id, outcome="unknown")
    if not res.cancelled:
        outcome = "already_cancelled" if res.error_code == "cancelled" else "already_finished"
        return CallCancelReply(call_id=res.call_id, outcome=outcome, status=res.status)  # type: ignore[arg-type]
    if res.reply_to:
        err = CallError(call_id=res.call_id, code=ErrorCode.cancelled, message=message)
        await nc.publish(res.reply_to, encode(err))
    if res.engine_id is not None and res.was in q.ACTIVE:
        ctl = Control(action="cancel", call_id=res.call_id, reason=message, seq=res.control_seq)
        await nc.publish(ctx.subjects.control(res.engine_id), encode(ctl))
    ctx.log.info("call cancelled", call_id=res.call_id, was=res.was, engine_id=res.engine_id)
    return CallCancelReply(call_id=res.call_id, outcome="cancelled", status="failed", was=res.was)
