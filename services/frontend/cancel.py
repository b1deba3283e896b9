"""Cancelling a call (`CallCancel`): one conditional Postgres transition, then two messages.

1. `store.finish.cancel_call`: whatever non-terminal state the call is in (queued, dispatched,
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

A whole program (`ProgramCancel`, or `ProgramClose` with `cancel`): every call of it that is not
yet terminal is cancelled exactly as above, one by one, so each caller gets its own
`CallError(cancelled)` and each engine its `Control(cancel)`. With `close` the program is closed
*first*, so no call accepted while the cancels run escapes them (a closed program takes no new
calls).
"""

from __future__ import annotations

from typing import Any

from autellix.services.frontend.accept import FrontendContext, close_program, unknown_program
from autellix.store.finish import cancel_call as store_cancel_call
from autellix.store.programs import program_status
from autellix.store.states import ACTIVE, TERMINAL
from autellix.wire.protocol import (
    CallCancel,
    CallCancelReply,
    CallError,
    Control,
    ErrorCode,
    ProgramCancel,
    ProgramCancelReply,
    ProgramClose,
    ProgramReply,
    encode,
)

ACTOR = "frontend"


async def cancel_call(ctx: FrontendContext, nc: Any, req: CallCancel) -> CallCancelReply:
    """Cancel one call (see module docstring); safe to repeat."""
    message = "cancelled by the caller" + (f": {req.reason}" if req.reason else "")
    res = await store_cancel_call(
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
    if res.engine_id is not None and res.was in ACTIVE:
        ctl = Control(action="cancel", call_id=res.call_id, reason=message, seq=res.control_seq)
        await nc.publish(ctx.subjects.control(res.engine_id), encode(ctl))
    ctx.log.info("call cancelled", call_id=res.call_id, was=res.was, engine_id=res.engine_id)
    return CallCancelReply(call_id=res.call_id, outcome="cancelled", status="failed", was=res.was)


async def _unfinished_call_ids(ctx: FrontendContext, program_id: str) -> list[str]:
    rows = await ctx.pool.fetch(
        "SELECT id FROM calls WHERE program_id = $1 AND status <> ALL($2::text[]) ORDER BY id",
        program_id,
        list(TERMINAL),
    )
    return [r["id"] for r in rows]


async def _cancel_unfinished(
    ctx: FrontendContext, nc: Any, program_id: str, reason: str
) -> list[str]:
    """Cancel each unfinished call of the program; the ids this request ended."""
    ended: list[str] = []
    for call_id in await _unfinished_call_ids(ctx, program_id):
        reply = await cancel_call(ctx, nc, CallCancel(call_id=call_id, reason=reason))
        if reply.outcome == "cancelled":
            ended.append(call_id)
    if ended:
        ctx.log.info("program cancelled", program_id=program_id, calls=len(ended))
    return ended


async def cancel_program(
    ctx: FrontendContext, nc: Any, req: ProgramCancel, tenant: str | None = None
) -> ProgramCancelReply | CallError:
    """Cancel every unfinished call of a program (see module docstring); safe to repeat.
    `tenant` (an HTTP API key's): another tenant's program is `unknown_program`, untouched."""
    reason = req.reason or "program cancelled"
    if req.close:
        closed = await close_program(ctx, ProgramClose(program_id=req.program_id), tenant)
        if isinstance(closed, CallError):
            return closed
        status = closed.status
    else:
        found = await program_status(ctx.pool, req.program_id, tenant)
        if found is None:
            return unknown_program(req.program_id)
        status = found
    ended = await _cancel_unfinished(ctx, nc, req.program_id, reason)
    return ProgramCancelReply(program_id=req.program_id, cancelled=ended, status=status)


async def close_program_cancelling(
    ctx: FrontendContext, nc: Any, req: ProgramClose
) -> ProgramReply | CallError:
    """`ProgramClose`: close; with `cancel`, then cancel what still runs and answer the
    statistics as they are after the cancels."""
    reply = await close_program(ctx, req)
    if isinstance(reply, CallError) or not req.cancel:
        return reply
    if await _cancel_unfinished(ctx, nc, req.program_id, "program closed"):
        return await close_program(ctx, req)
    return reply
