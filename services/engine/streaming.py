"""Tokens from the backend to the caller, as `TokenDelta`s on the call's reply subject.

Deltas are batched to at most one message per `delta_interval_s` or `delta_max_tokens` tokens
per call, each with the `offset` of its first token (a caller drops what it already has, so a
call resumed elsewhere continues the same stream). No token is sent before the engine knows the
call is its own (its start record, `ledger.py`). Text that may be the start of a stop string is
held back until it is known not to be one (`textout.py`).
"""

from __future__ import annotations

import contextlib
import time

from autellix.backends.base import GenerationRequest
from autellix.backends.textout import OutputText
from autellix.services.engine.call import EngineCall
from autellix.services.engine.state import RunnerState
from autellix.wire.protocol import TokenDelta, encode


class Streaming(RunnerState):
    """`_generate` (consume one backend generation), `_flush` (send the unsent tokens)."""

    async def _generate(self, call: EngineCall, gen: GenerationRequest) -> str:
        agen = self.backend.generate(gen)
        try:
            reported_cache = False
            async for chunk in agen:
                if chunk.cached_prompt_tokens is not None and not reported_cache:
                    reported_cache = True
                    if call.cached_tokens is None:
                        call.cached_tokens = chunk.cached_prompt_tokens
                    # prompt tokens this segment computed (prefix-cache hits are free)
                    call.prefill_tokens += max(
                        0, len(gen.prompt_token_ids) - chunk.cached_prompt_tokens
                    )
                if chunk.token_ids:
                    if not call.tokens:  # a resumed call has its earlier tokens: not counted
                        self.otel.first_token(call)
                    call.tokens.extend(chunk.token_ids)
                    if chunk.logprobs is not None:
                        call.logprobs.extend(chunk.logprobs)
                    out = call.out
                    if out is not None and out.stops and out.check(call.tokens):
                        # a stop string is complete: keep the tokens up to it, end the request
                        # (closing the stream aborts it in the backend)
                        del call.tokens[out.stop_tokens :]
                        del call.logprobs[max(0, out.stop_tokens - call.logprobs_from) :]
                        return "stop"
                    now = time.monotonic()
                    if (
                        len(call.tokens) - call.sent >= self.cfg.delta_max_tokens
                        or now - self._last_flush.get(call.call_id, 0.0)
                        >= self.cfg.delta_interval_s
                    ) and chunk.finish_reason is None:
                        await self._flush(call)
                if chunk.finish_reason is not None:
                    return chunk.finish_reason
            return "length" if call.remaining == 0 else "abort"
        finally:
            with contextlib.suppress(Exception):
                await agen.aclose()  # type: ignore[attr-defined]

    def _text(self, call: EngineCall) -> OutputText:
        """The call's output text tracker (stop strings, prefix-stable text deltas)."""
        if call.out is None:
            call.out = OutputText(self.backend.detokenize, call.dispatch.request.sampling.stop)
        return call.out

    async def _flush(self, call: EngineCall, final: bool = False) -> None:
        """Stream the tokens not yet sent. Mid-call, text that may be the start of a stop string
        is held back (with its tokens); `final` sends everything (the call has ended)."""
        if call.sent >= len(call.tokens) or call.call_id in self._unconfirmed:
            return  # nothing new, or not yet known to be ours: no tokens to the caller yet
        out = self._text(call)
        upto = len(call.tokens) if final else out.releasable(call.tokens, call.sent)
        if upto <= call.sent:
            return
        if not call.dispatch.request.stream:
            # nobody reads deltas: the tokens count as released (progress and preemption save
            # `tokens[:sent]`), the final carries them all
            call.sent = upto
            return
        new = call.tokens[call.sent : upto]
        delta = TokenDelta(
            call_id=call.call_id,
            offset=call.sent,
            token_ids=new,
            text=out.delta(call.tokens, call.sent, upto),
            logprobs=call.logprobs_of(call.sent, upto),
        )
        call.sent = upto
        self._last_flush[call.call_id] = time.monotonic()
        await self.nc.publish(call.dispatch.reply_to, encode(delta))
        self.otel.streamed(len(new))
