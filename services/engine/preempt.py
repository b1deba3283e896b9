"""How a running call is preempted: abort its backend request, then resume it later.

A preemption (chosen by `admission.py`, or asked for by a scheduler's `Control`) cancels the
call's backend stream, which frees its batch slot; once the segment has stopped (`segments.py`),
`mark_preempted` records the tokens streamed so far and the call goes back to its level queue
with its rank key. When admitted again it runs as a continuation: prompt + tokens so far, the
remaining `max_tokens`. The caller's stream goes on from the next offset.
"""

from __future__ import annotations

from autellix.services.engine.call import EngineCall
from autellix.services.engine.state import RunnerState
from autellix.store.running import mark_preempted


class Preemption(RunnerState):
    """`preempt` (abort the running segment); `_requeue_preempted` (record it, queue it again)."""

    def preempt(
        self,
        call: EngineCall,
        reason: str,
        requeue_level: int | None = None,
        by: str | None = None,
    ) -> bool:
        """Stop a running call's segment so its slot frees (False if it is not running or is
        already stopping); `requeue_level` is where it waits next, `by` the call it makes room
        for (recorded in its call event)."""
        if call.state != "running" or call.gen_task is None or call.stop_reason is not None:
            return False
        call.stop_reason, call.stop_detail, call.requeue_level = "preempt", reason, requeue_level
        call.preempted_by = by
        call.preempt_counted = True
        self._preempting += 1
        call.gen_task.cancel()
        return True

    async def _requeue_preempted(self, call: EngineCall, detail: str) -> None:
        """The preempted segment has stopped: record its progress (conditional on still owning
        the call) and put it back at its level, to be resumed as a continuation."""
        level = call.requeue_level if call.requeue_level is not None else call.level
        ok = await self._transition(
            mark_preempted,
            call,
            output_token_ids=call.tokens[: call.sent],
            output_logprobs=call.saved_logprobs(call.sent),
            level=level,
            reason=detail,
            service=call.service,
            run_s=call.run_s,
            other_call_id=call.preempted_by,
        )
        call.preempted_by = None
        if not ok:
            self._drop(call, "not owned at preemption")
            return
        # its last progress, now: it will not be in the running calls' periodic reports
        await self.publish_report(self.progress_of([call]))
        call.saved = call.sent
        call.preemptions += 1
        self.preemptions += 1
        self.otel.preempted(call, detail, level)
        call.level = level
        call.state = "waiting"
        self.queues.push(call, front=True)
        self.log.info(
            "call preempted", call_id=call.call_id, tokens=len(call.tokens), reason=detail
        )
