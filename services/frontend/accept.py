"""Accepting calls and opening/closing programs: plain async functions, no NATS subscription.

The NATS frontend (`app.py`) calls these, and so can an HTTP layer (issue 7): give it a
`FrontendContext` and a reply subject (the inbox whose messages you relay to your client), and
you get back what to answer first (`CallAccepted` or `CallError`) plus any stored replies to
replay after it.

Accepting a call (`accept_call`):
0. refusals that store nothing: a call whose messages could exceed the bus's max_payload
   (`message_too_large`: it could be accepted but never delivered), a call naming a `model` no
   live engine serves (`model_not_found`, the rule in `live_engines.py`: answered now rather
   than as `no_engine` after the scheduler's wait), and, past the bound on unfinished calls,
   `overloaded` (`admission.py`);
1. one statement (one commit): program upsert (auto-created while unknown; a closed program
   refuses with `program_closed`), call insert (idempotent on (program_id, client_call_id)),
   thread upsert;
2. answer `CallAccepted` (through the caller-supplied `send`);
3. offer the `ScheduleCall` to the schedulers directly (core NATS request to the queue group,
   `transport.direct`): taken means a replica has dispatched it; otherwise (busy, no replica,
   no answer within the direct timeout) publish it to JetStream (`Nats-Msg-Id` = call id: a
   retried publish is stored once), retried a few times. Answering first keeps the inbox order
   the protocol promises (accepted before any delta); the call is already durable in Postgres
   at that point.

If the publish still fails after the insert committed, the call is accepted anyway (it is
durable in Postgres) and the schedulers' **reconciler** republishes every call left `queued`
with no activity for `reconcile_after_s` (default 30 s): chosen over an outbox table because the
calls table already *is* the outbox (status `queued`), so nothing new has to be written on the
hot path.

Tenants (HTTP API keys): `tenant` is the caller's. The call is counted against that tenant's
bound too (`admission.py`), a program it creates is stored as its own, and a program of another
tenant (or of none) is refused with `unknown_program`, the very answer a program that does not
exist gets on close and cancel (HTTP: 404 `program_not_found`), with a log line. NATS callers
and an HTTP API without keys have no tenant (None): nothing is checked.

A duplicate `client_call_id` never runs twice: the existing call id comes back with
`duplicate=true`. If that call is still in progress, its final answer is redirected to the new
reply subject (the retrying client is the one listening now); if it already ended, its stored
final (or error) is replayed to the new reply subject.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from nats.js import JetStreamContext

from autellix.runtime.service import CrashPoint
from autellix.services.frontend.admission import Admission
from autellix.services.frontend.live_engines import EngineDirectory
from autellix.store.accept import accept_call as store_accept_call
from autellix.store.accept import new_call_id, redirect_reply
from autellix.store.inspect import call_record
from autellix.store.programs import ProgramRow, new_program_id
from autellix.store.programs import close_program as store_close_program
from autellix.store.programs import open_program as store_open_program
from autellix.store.states import TERMINAL
from autellix.transport import bus
from autellix.transport.direct import DirectGate
from autellix.transport.publisher import AsyncPublisher, Outgoing
from autellix.wire.protocol import (
    MAX_MESSAGE_BYTES,
    TOKEN_LOGPROBS,
    CallAccepted,
    CallError,
    CallFinal,
    CallRequest,
    EngineInfo,
    ErrorCode,
    ProgramClose,
    ProgramOpen,
    ProgramReply,
    ProgramStats,
    ScheduleCall,
    Subjects,
    Timing,
    TokenLogprob,
    Usage,
    encode,
    too_large_for_bus,
)


@dataclass
class FrontendContext:
    pool: Any
    js: JetStreamContext
    subjects: Subjects
    log: Any
    publish_attempts: int = 3
    crash: CrashPoint = field(default_factory=CrashPoint)
    publisher: AsyncPublisher | None = None  # None: one JetStream request per publish
    direct: bool = False  # offer ScheduleCalls to the schedulers directly first (`direct.py`)
    direct_timeout_s: float = 1.0
    direct_gate: DirectGate = field(default_factory=DirectGate)
    #: the NATS server's max_payload (from its INFO): no message of an accepted call may exceed it
    max_payload: int = MAX_MESSAGE_BYTES
    admission: Admission | None = None  # None: no bound on unfinished calls
    engines: EngineDirectory | None = None  # None: no call is refused for its model


@dataclass
class AcceptOutcome:
    first: CallAccepted | CallError
    replay: list[CallFinal | CallError] = field(default_factory=list)
    published: bool = True
    #: the call named a program of another tenant (`first` is then `unknown_program`'s error)
    not_owned: bool = False


def unknown_program(program_id: str) -> CallError:
    """The answer for a program that does not exist, and the same for another tenant's."""
    return CallError(code=ErrorCode.validation_error, message=f"unknown program {program_id}")


Send = Callable[[CallAccepted | CallError | CallFinal], Awaitable[None]]


async def accept_call(
    ctx: FrontendContext,
    request: CallRequest,
    reply_to: str,
    send: Send,
    headers: dict[str, str] | None = None,
    tenant: str | None = None,
) -> AcceptOutcome:
    """Register the call, `send` the caller its first answer(s), then schedule it.

    `send` delivers to the caller (NATS: publish to the reply subject; HTTP: the response
    stream). `CallAccepted` is sent before anything can route replies to this caller (before
    the ScheduleCall publish; for a duplicate, before its reply subject is redirected here), so
    it always precedes the first delta on the caller's inbox. Measured: under load a delta did
    overtake an accepted sent after the publish.
    """
    request_json = request.model_dump_json(exclude_none=True)
    refused = too_large_for_bus(request, request_json, ctx.max_payload)
    if refused is None and ctx.engines is not None:
        refused = ctx.engines.refusal(request.model)
    if refused is None and ctx.admission is not None:
        refused = await ctx.admission.check(tenant)
    if refused is not None:
        await send(refused)
        return AcceptOutcome(refused, published=False)
    res = await store_accept_call(
        ctx.pool,
        call_id=new_call_id(),
        program_id=request.program_id,
        thread_id=request.thread_id,
        client_call_id=request.client_call_id,
        parent_ids=request.parent_ids,
        reply_to=reply_to,
        request_json=request_json,
        tenant=tenant,
    )
    ctx.crash("after_insert")  # tests: die between the insert and everything else
    if ctx.admission is not None and (res.not_owned or res.program_closed or res.duplicate):
        ctx.admission.uncount(tenant)  # no new call: it takes no room
    if res.not_owned:
        ctx.log.warning(
            "call for another tenant's program refused as unknown",
            program_id=request.program_id,
            tenant=tenant,
        )
        error = unknown_program(request.program_id)
        await send(error)
        return AcceptOutcome(error, published=False, not_owned=True)
    if res.program_closed:
        error = CallError(
            code=ErrorCode.program_closed,
            message=f"program {request.program_id} is closed; open a new program",
        )
        await send(error)
        return AcceptOutcome(error)
    accepted = CallAccepted(
        call_id=res.call_id, program_id=request.program_id, duplicate=res.duplicate
    )
    await send(accepted)
    outcome = AcceptOutcome(accepted)
    if res.duplicate:
        outcome.published = False
        if res.status in TERMINAL or not await redirect_reply(ctx.pool, res.call_id, reply_to):
            record = await call_record(ctx.pool, res.call_id)
            if record is not None:
                outcome.replay.append(stored_result(record))
                await send(outcome.replay[-1])
        return outcome
    outcome.published = await _schedule(ctx, accepted, reply_to, headers)
    return outcome


async def _schedule(
    ctx: FrontendContext, accepted: CallAccepted, reply_to: str, headers: dict[str, str] | None
) -> bool:
    schedule = ScheduleCall(
        call_id=accepted.call_id, program_id=accepted.program_id, reply_to=reply_to
    )
    payload = encode(schedule)
    try:
        if ctx.publisher is not None:  # PubAcks on one subscription (no request per call)
            out = Outgoing(
                ctx.subjects.sched_calls,
                payload,
                bus.schedule_msg_id(accepted.call_id, 0),
                headers,
                direct_subject=ctx.subjects.sched_direct,
            )
            # offered to the schedulers first: taken = a replica dispatched it (or found nothing
            # to do); not taken -> JetStream
            gate = ctx.direct_gate if ctx.direct else None
            await ctx.publisher.deliver([out], gate, ctx.direct_timeout_s)
        else:
            await bus.publish_js(
                ctx.js,
                ctx.subjects.sched_calls,
                payload,
                bus.schedule_msg_id(accepted.call_id, 0),
                headers=headers,
                attempts=ctx.publish_attempts,
            )
    except Exception as exc:
        ctx.log.warning(
            "ScheduleCall publish failed; the reconciler will republish it",
            call_id=accepted.call_id,
            error=repr(exc),
        )
        return False
    return True


def stored_logprobs(record: dict[str, Any], start: int = 0) -> list[TokenLogprob] | None:
    """The row's logprobs of its stored tokens from `start` on (None: the call did not ask,
    or they are not known for every token: never a list with a hole)."""
    raw = record.get("output_logprobs")
    if raw is None:
        return None
    entries = TOKEN_LOGPROBS.validate_python(raw)
    if len(entries) != len(record.get("output_token_ids") or []):
        return None
    return entries[start:]


def stored_result(record: dict[str, Any]) -> CallFinal | CallError:
    """The answer a terminal call already gave, rebuilt from its row (for duplicates)."""
    if record["status"] != "finished":
        code = record.get("error_code") or ErrorCode.internal.value
        return CallError(
            call_id=record["id"],
            code=ErrorCode(code) if code in ErrorCode.__members__ else ErrorCode.internal,
            message=record.get("error_message") or "call failed",
        )
    tokens = list(record.get("output_token_ids") or [])
    return CallFinal(
        call_id=record["id"],
        program_id=record["program_id"],
        finish_reason=record.get("finish_reason") or "length",
        token_ids=tokens,
        text=record.get("output_text"),
        usage=Usage(
            prompt_tokens=record.get("prompt_tokens") or 0,
            completion_tokens=record.get("completion_tokens") or 0,
            cached_tokens=record.get("cached_tokens") or 0,
        ),
        timing=Timing(
            accepted_at=record["accepted_at"],
            dispatched_at=record.get("dispatched_at"),
            started_at=record.get("started_at"),
            finished_at=record["finished_at"],
            queue_s=record.get("queue_s") or 0.0,
            run_s=record.get("run_s") or 0.0,
        ),
        engine=EngineInfo(
            engine_id=record.get("engine_id") or "",
            backend=record.get("engine_backend") or "",
            model=record.get("engine_model") or "",
        ),
        preemptions=record.get("preemptions") or 0,
        level=record.get("level") or 0,
        logprobs=stored_logprobs(record),
    )


def _stats(row: ProgramRow) -> ProgramStats:
    return ProgramStats(
        calls=row.calls_total,
        calls_finished=row.calls_finished,
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
        service=row.service,
        waiting_s=row.waiting_s,
    )


async def open_program(
    ctx: FrontendContext, req: ProgramOpen, tenant: str | None = None
) -> ProgramReply | CallError:
    """Create (or look up) a program, as `tenant`'s when it is new. Reopening a closed program
    is not possible: it stays `closed` in the reply and its calls are refused. Another tenant's
    program is `unknown_program`."""
    program_id = req.program_id or new_program_id()
    row = await store_open_program(ctx.pool, program_id, dict(req.metadata), tenant)
    if row is None:
        return unknown_program(program_id)
    return ProgramReply(program_id=row.id, status=row.status, stats=_stats(row))  # type: ignore[arg-type]


async def close_program(
    ctx: FrontendContext, req: ProgramClose, tenant: str | None = None
) -> ProgramReply | CallError:
    """Close a program (the client is done); its row keeps the final statistics. One that
    already expired (idle TTL, see the schedulers' maintenance) stays `expired`. Unknown, or
    another tenant's: `unknown_program`."""
    row = await store_close_program(ctx.pool, req.program_id, tenant)
    if row is None:
        return unknown_program(req.program_id)
    status = row.status if row.status in ("closed", "expired") else "closed"
    return ProgramReply(program_id=row.id, status=status, stats=_stats(row))  # type: ignore[arg-type]
