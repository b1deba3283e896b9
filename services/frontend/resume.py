"""Answering `CallResume`: where a call stands, from Postgres, for a caller that missed replies.

Why from Postgres and not the bus: an engine writes a call's outcome (tokens, usage, status) to
the call row *before* it publishes the final, so the row is the one copy that survives a final
published while NATS was down, or to an inbox whose subscription was not back yet. A running
call's row has the tokens its engine has saved so far (`save_progress`, about once a second);
the caller keeps listening for the rest.

No authentication exists yet: whoever knows a program id and a call id (or client call id) of
it can read that call's tokens here, as they could cancel it. The program scope only keeps a
call id from one program from being read through another.
"""

from __future__ import annotations

from autellix.services.frontend.accept import FrontendContext, stored_logprobs, stored_result
from autellix.store.resume import resume_record
from autellix.store.states import TERMINAL
from autellix.wire.protocol import CallError, CallFinal, CallResume, CallResumeReply


async def resume_call(ctx: FrontendContext, req: CallResume) -> CallResumeReply:
    """The call's status, its stored tokens from `req.offset`, and its answer once ended."""
    record = await resume_record(ctx.pool, req.program_id, req.call_id, req.client_call_id)
    if record is None:
        return CallResumeReply(
            call_id=req.call_id, program_id=req.program_id, status="unknown", offset=req.offset
        )
    tokens = list(record.get("output_token_ids") or [])
    reply = CallResumeReply(
        call_id=record["id"],
        program_id=record["program_id"],
        status=record["status"],
        offset=req.offset,
        token_ids=tokens[req.offset :],
        logprobs=stored_logprobs(record, req.offset),
    )
    if record["status"] not in TERMINAL:
        return reply
    answer = stored_result(record)
    if isinstance(answer, CallFinal):
        # its tokens (and their logprobs) are the caller's first `offset` and `token_ids`
        # (`logprobs`): not sent twice, so the reply stays within the size the door checked
        slim = {"token_ids": None, "logprobs": None}
        return reply.model_copy(update={"final": answer.model_copy(update=slim)})
    assert isinstance(answer, CallError)
    return reply.model_copy(update={"error": answer})
