"""How a call ends here: finished (`CallFinal`), failed (`CallError`), dropped or lost.

`finish_call` and `fail_call` are conditional (this engine, this attempt, not yet terminal): if
the update matches nothing (the call was re-dispatched elsewhere meanwhile) nothing is sent, so
a call is answered once, by the owner of its latest attempt. `finish_call` also records the
start of a call that ended before its start was written (`ledger.py`). `_done` is the
bookkeeping every ending shares.
"""

from __future__ import annotations

import time

from autellix.services.engine.call import EngineCall
from autellix.services.engine.state import RunnerState
from autellix.store.finish import fail_call, finish_call
from autellix.store.states import ACTIVE
from autellix.wire.protocol import CallError, CallFinal, ErrorCode, Timing, Usage, encode

_RETRYABLE = {ErrorCode.engine_failed.value, ErrorCode.internal.value, ErrorCode.no_engine.value}


class Finishing(RunnerState):
    """`_finish`, `_fail`, `_drop`, `_lose` and the shared `_done`."""

    async def _finish(self, call: EngineCall, finish_reason: str) -> None:
        assert call.prompt_ids is not None
        started_ago: float | None = None
        if self.calls.get(call.call_id) is not call:  # a newer attempt arrived here meanwhile
            self._drop(call, "superseded by a newer dispatch")
            return
        if self._start_pending.pop(call.call_id, None) is not None:
            # ended before its start was written: the (conditional) finish below records the
            # start too and is the ownership check; one statement instead of two
            started_ago = time.monotonic() - self._seg_t0.get(call.call_id, time.monotonic())
        elif not await self._confirm_start(call):
            self._drop(call, "not owned at start (re-dispatched or finished elsewhere)")
            return
        text = self._text(call).final(call.tokens)  # stored too: answers rebuilt from the row
        row = await self._transition(
            finish_call,
            call,
            prompt_tokens=len(call.prompt_ids),
            completion_tokens=len(call.tokens),
            cached_tokens=call.cached_tokens or 0,
            service=call.service,
            run_s=call.run_s,
            finish_reason=finish_reason,
            output_token_ids=call.tokens,
            started_ago_s=started_ago,
            output_text=text,
            output_logprobs=call.saved_logprobs(len(call.tokens)),
        )
        self._unconfirmed.discard(call.call_id)
        if row is None:
            self._drop(call, "not owned at finish; result discarded")
            return
        await self._flush(call, final=True)  # the last tokens as a delta, before the final
        final = CallFinal(
            call_id=call.call_id,
            program_id=row.program_id,
            finish_reason=finish_reason,  # type: ignore[arg-type]
            token_ids=call.tokens
            if self.cfg.final_token_ids or not call.dispatch.request.stream
            else None,
            text=text,
            usage=Usage(
                prompt_tokens=len(call.prompt_ids),
                completion_tokens=len(call.tokens),
                cached_tokens=call.cached_tokens or 0,
            ),
            timing=Timing(
                accepted_at=row.accepted_at,
                dispatched_at=row.dispatched_at,
                started_at=row.started_at,
                finished_at=row.finished_at,
                queue_s=row.queue_s,
                run_s=call.run_s,
            ),
            engine=self.info,
            preemptions=row.preemptions,
            level=row.level,
            # a streamed caller got them with the deltas; a non-streamed one only has the final
            logprobs=None
            if call.dispatch.request.stream
            else call.logprobs_of(0, len(call.tokens)),
        )
        await self.nc.publish(row.reply_to, encode(final))
        self.finished += 1
        self.otel.finished(call, final)
        self._done(call)

    async def _fail(self, call: EngineCall, code: str, message: str) -> None:
        reply_to = await self._transition(
            fail_call,
            call,
            code=str(code),
            message=message,
            actor=self.engine_id,
            from_statuses=ACTIVE,
        )
        if reply_to is not None:
            err = CallError(
                call_id=call.call_id,
                code=ErrorCode(code) if code in ErrorCode.__members__ else ErrorCode.engine_failed,
                message=message,
                retryable=str(code) in _RETRYABLE,
            )
            await self.nc.publish(reply_to, encode(err))
            self.failed += 1
            self.otel.failed(call, str(code), message)
            self.log.info("call failed", call_id=call.call_id, code=str(code), message=message)
        self._done(call)

    def _drop(self, call: EngineCall, why: str) -> None:
        self.log.info("call dropped", call_id=call.call_id, attempt=call.dispatch.attempt, why=why)
        self._done(call)

    def _done(self, call: EngineCall) -> None:
        call.state = "done"
        self.otel.done(call)
        if self.calls.get(call.call_id) is call:
            del self.calls[call.call_id]
        self._last_flush.pop(call.call_id, None)
        if self.calls.get(call.call_id) is None:  # not when a newer attempt took its place
            self._start_pending.pop(call.call_id, None)
            self._unconfirmed.discard(call.call_id)
            self._seg_t0.pop(call.call_id, None)
        self._recent[(call.call_id, call.dispatch.attempt)] = None
        while len(self._recent) > 50_000:
            self._recent.popitem(last=False)

    def _lose(self, call: EngineCall, why: str) -> None:
        """Stop working on a call this engine no longer owns (no DB writes, no replies)."""
        if call.state == "waiting":
            self.queues.remove(call)
            self._drop(call, why)
        elif call.state == "running" and call.gen_task is not None and call.stop_reason is None:
            call.stop_reason, call.stop_detail = "lost", why
            call.gen_task.cancel()
        elif call.state == "starting":
            call.stop_reason, call.stop_detail = "lost", why
