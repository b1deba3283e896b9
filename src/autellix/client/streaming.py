"""Folding one call's replies into what its caller sees: new tokens once each, then the result.

Deltas carry offsets because a call can be answered by more than one engine: after an engine is
lost, its successor may resend tokens the client already has. Only the part past what was already
received is passed on, so a caller reading a stream sees every token exactly once, in order.

A delta that starts past what was received (the ones between were lost, e.g. published while
NATS was down) is held back, not passed on: the client fills the gap from the call's stored
tokens (a `CallResume`, see `connection.py`), and then the held deltas follow in order.
"""

from __future__ import annotations

import time

from autellix.client.results import CallResult
from autellix.wire.protocol import CallAccepted, CallFinal, CallRequest, TokenDelta, TokenLogprob

__all__ = ["CallStream"]


class CallStream:
    """The state of one call's reply stream, from submit to its final answer."""

    def __init__(self, request: CallRequest, start: float, *, own_key: bool = False) -> None:
        self.request = request
        self.start = start  # time.monotonic() at submit: latencies are measured from it
        #: the client made up `request.client_call_id` itself: a `duplicate` accept is then
        #: its own retry, not the caller's
        self.own_key = own_key
        self.call_id: str | None = None
        self.duplicate = False
        self.tokens: list[int] = []
        self.texts: list[str] = []
        #: streamed log-probabilities, one per token, while every delta brought its own
        self.logprobs: list[TokenLogprob] | None = (
            [] if request.sampling.logprobs is not None else None
        )
        self.text_whole = True  # every token so far came with its text
        self.held: dict[int, TokenDelta] = {}  # deltas past a gap, by offset
        self.first_token_s: float | None = None

    @property
    def accepted_yet(self) -> bool:
        return self.call_id is not None

    @property
    def gap(self) -> bool:
        """Some deltas are held back behind missing tokens."""
        return bool(self.held)

    def accepted(self, reply: CallAccepted) -> None:
        self.call_id = reply.call_id
        self.duplicate = reply.duplicate and not self.own_key

    def deltas(self, reply: TokenDelta) -> list[TokenDelta]:
        """The new tokens ``reply`` brings, as deltas in order (several when it closes a gap
        that held deltas were waiting behind; none for a replay or a delta past a gap)."""
        if reply.offset > len(self.tokens):
            self.held[reply.offset] = reply
            return []
        out = [d for d in (self._take(reply),) if d is not None]
        while self.held:
            ready = [o for o in self.held if o <= len(self.tokens)]
            if not ready:
                break
            for offset in sorted(ready):
                new = self._take(self.held.pop(offset))
                if new is not None:
                    out.append(new)
        return out

    def _take(self, reply: TokenDelta) -> TokenDelta | None:
        tokens = self.tokens
        end = reply.offset + len(reply.token_ids)
        if end <= len(tokens):
            return None
        skip = len(tokens) - reply.offset
        new = reply.token_ids[skip:]
        tokens.extend(new)
        if self.first_token_s is None:
            self.first_token_s = time.monotonic() - self.start
        if self.logprobs is not None:
            if reply.logprobs is not None and len(reply.logprobs) == len(reply.token_ids):
                self.logprobs.extend(reply.logprobs[skip:])
            else:  # tokens without logprobs (stored tokens, a resumed engine's): not aligned
                self.logprobs = None
        if skip or reply.text is None:
            self.text_whole = False  # its text cannot be split, or was never sent
            lps = reply.logprobs[skip:] if reply.logprobs is not None else None
            return TokenDelta(
                call_id=reply.call_id, offset=reply.offset + skip, token_ids=new, logprobs=lps
            )
        self.texts.append(reply.text)
        return reply

    def missing(self, final: CallFinal) -> bool:
        """The final says more tokens were generated than this stream has, and does not carry
        them itself: they must be read from the call's stored tokens."""
        return final.token_ids is None and final.usage.completion_tokens > len(self.tokens)

    def tail(self, final: CallFinal) -> list[TokenDelta]:
        """The final's tokens past what was streamed (deltas lost on the way), as deltas."""
        if final.token_ids is None or len(final.token_ids) <= len(self.tokens):
            return []
        tail = TokenDelta(call_id=final.call_id, offset=0, token_ids=list(final.token_ids))
        return self.deltas(tail)

    def result(self, reply: CallFinal) -> CallResult:
        """The call's result: the final's tokens and text, else those the deltas brought."""
        final_tokens = reply.token_ids if reply.token_ids is not None else self.tokens
        streamed_text = "".join(self.texts) if self.text_whole else ""
        return CallResult(
            call_id=reply.call_id,
            program_id=reply.program_id,
            thread_id=self.request.thread_id,
            token_ids=list(final_tokens),
            text=reply.text if reply.text is not None else (streamed_text or None),
            finish_reason=reply.finish_reason,
            usage=reply.usage,
            timing=reply.timing,
            engine=reply.engine,
            preemptions=reply.preemptions,
            level=reply.level,
            duplicate=self.duplicate,
            latency_s=time.monotonic() - self.start,
            first_token_s=self.first_token_s,
            logprobs=_aligned(
                reply.logprobs if reply.logprobs is not None else self.logprobs, final_tokens
            ),
        )


def _aligned(logprobs: list[TokenLogprob] | None, tokens: list[int]) -> list[TokenLogprob] | None:
    """The logprobs when there is one per token, else None: a call moved to another engine
    whose earlier tokens were saved without theirs (a row from an older version) has a hole."""
    if logprobs is None or len(logprobs) != len(tokens):
        return None
    return logprobs
