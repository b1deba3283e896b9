"""One segment of a call: a single backend generation, from admission to how it ended.

Each admitted call runs one *segment* in its own task:

1. the prompt is tokenized and checked against the model's context (first segment only);
2. its start is recorded: a conditional `mark_running` (this engine, this attempt), written in
   batches off the critical path while the generation already runs (`ledger.py`); not owned →
   dropped silently;
3. generate (`streaming.py` sends the tokens to the caller);
4. the end: finished → `finish.py`; a backend error → failed, or handed back when the backend
   itself died (`handback.py`); stopped early (`stop_reason`) → `preempt` re-queues it
   (`preempt.py`), `cancel` fails it `cancelled`, `lost` drops it, `shutdown` hands it back.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from autellix.backends.base import BackendError, GenerationRequest
from autellix.services.engine.call import EngineCall
from autellix.services.engine.state import RunnerState
from autellix.store.running import mark_running
from autellix.wire.protocol import CallRequest, ErrorCode


class Segments(RunnerState):
    """`_run` (a segment's task), `_segment` (its steps), `_stopped` (an early stop's outcome)."""

    async def _run(self, call: EngineCall) -> None:
        cancelled = False
        try:
            with self.otel.segment(call):  # spans: queued (the wait before), run (this segment)
                await self._segment(call)
        except asyncio.CancelledError:
            cancelled = True  # the task itself was cancelled: the engine is being torn down
            raise
        except Exception as exc:
            self.log.exception("call segment crashed", call_id=call.call_id, error=repr(exc))
            with contextlib.suppress(Exception):
                await self._fail(call, ErrorCode.engine_failed, f"engine error: {exc!r}")
        finally:
            self.running.discard(call)
            if call.preempt_counted:
                call.preempt_counted = False
                self._preempting -= 1
            if not cancelled:  # no new segments from a teardown (they would outlive the loop)
                self._admit()

    async def _segment(self, call: EngineCall) -> None:
        """Run one generation segment, then finish, fail, requeue or drop the call."""
        req = call.dispatch.request
        if call.prompt_ids is None:
            try:
                call.prompt_ids = await self._prompt_ids(req)
                self._check_length(call)
                self._check_vocabulary(call)
                if req.sampling.stop and not self._text(call).has_text:
                    raise BackendError(
                        "validation_error",
                        f"stop strings need a model with a tokenizer; {self.backend.name} model "
                        f"{self.backend.model!r} has none (use stop_token_ids)",
                    )
            except BackendError as exc:
                await self._fail(call, exc.code, exc.message)
                return
        if self.cfg.start_batch_s is None:  # the start is recorded before generating
            owned = await self._transition(
                mark_running,
                call,
                prompt_tokens=len(call.prompt_ids),
            )
            if not owned:
                self._drop(call, "not owned at start (re-dispatched or finished elsewhere)")
                return
        else:  # generate now; the start is recorded by `_start_writer` (ownership checked there)
            self._request_start(call)
        call.state = "running"
        call.run_start_tokens = len(call.tokens)
        finish: str | None = None
        error: BackendError | None = None
        if call.stop_reason is None:
            call.segments += 1
            sp = req.sampling
            gen = GenerationRequest(
                request_id=f"{call.call_id}:{call.attempts}:{call.segments}",
                prompt_token_ids=call.prompt_ids + call.tokens,
                max_tokens=call.remaining,
                temperature=sp.temperature,
                top_p=sp.top_p,
                seed=sp.seed,
                stop_token_ids=list(sp.stop_token_ids),
                ignore_eos=sp.ignore_eos,
                priority=call.backend_priority,
                presence_penalty=sp.presence_penalty,
                frequency_penalty=sp.frequency_penalty,
                repetition_penalty=sp.repetition_penalty,
                structured=req.structured,
                logprobs=sp.logprobs,
            )
            t0 = call.run_started = time.monotonic()
            call.gen_task = asyncio.create_task(self._generate(call, gen))
            try:
                finish = await call.gen_task
            except asyncio.CancelledError:
                if call.stop_reason is None:
                    raise  # we ourselves are being cancelled
            except BackendError as exc:
                error = exc
            finally:
                call.gen_task = None
                call.run_started = None
                call.run_s += time.monotonic() - t0
        if error is None and finish is not None:
            await self._finish(call, finish)  # confirms ownership itself, then streams the rest
            return
        if not await self._confirm_start(call):
            self._drop(call, "not owned at start (re-dispatched or finished elsewhere)")
            return
        await self._flush(call)
        if error is not None and getattr(self.backend, "dead", False):
            await self._backend_died(call, error)
        elif error is not None:
            await self._fail(call, error.code, error.message)
        else:
            await self._stopped(call)

    async def _stopped(self, call: EngineCall) -> None:
        reason, detail = call.stop_reason, call.stop_detail
        call.stop_reason = None
        if reason == "preempt":
            await self._requeue_preempted(call, detail)
            return
        if reason == "cancel":
            await self._fail(call, ErrorCode.cancelled, detail or "cancelled")
        elif reason == "shutdown":
            await self._hand_back([call], "engine shutting down")
        else:
            self._drop(call, detail or "ownership lost")

    async def _prompt_ids(self, req: CallRequest) -> list[int]:
        if req.prompt_token_ids is not None:
            return list(req.prompt_token_ids)
        if req.prompt is not None:
            if len(req.prompt) > 20_000:  # real tokenizers take a while on long text
                return await asyncio.to_thread(self.backend.tokenize, req.prompt)
            return self.backend.tokenize(req.prompt)
        assert req.messages is not None
        messages = [m.model_dump(exclude_none=True) for m in req.messages]
        template = getattr(self.backend, "apply_chat_template", None)
        if template is not None:  # the model's own template renders tools and tool turns
            return await asyncio.to_thread(template, messages, req.tools)
        text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "
        return self.backend.tokenize(text)

    def _check_vocabulary(self, call: EngineCall) -> None:
        """Token ids the caller gave (prompt, stop) must exist in this model's vocabulary: the
        protocol can only bound them by the wire format, and an id past the vocabulary is
        undefined behaviour in a model's embedding lookup, never something to run."""
        vocab = getattr(self.backend, "vocab_size", None)
        if not vocab:
            return
        req = call.dispatch.request
        given = [*(req.prompt_token_ids or ()), *req.sampling.stop_token_ids]
        bad = [t for t in given if t >= vocab]
        if bad:
            raise BackendError(
                ErrorCode.validation_error.value,
                f"token ids must be in [0, {vocab}) for {self.backend.name} model "
                f"{self.backend.model!r}: {bad[0]} is outside its vocabulary "
                f"({len(bad)} such id(s))",
            )

    def _check_length(self, call: EngineCall) -> None:
        assert call.prompt_ids is not None
        n, limit = len(call.prompt_ids), self.backend.max_model_len
        if n + call.max_tokens > limit:
            raise BackendError(
                ErrorCode.prompt_too_long.value,
                f"prompt has {n} tokens and max_tokens is {call.max_tokens}: more than the "
                f"model's {limit}-token context ({self.backend.name} engine {self.engine_id})",
            )
