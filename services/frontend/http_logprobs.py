"""Per-token log-probabilities from the engine (`TokenLogprob`) in OpenAI's two shapes.

Chat answers carry `choices[].logprobs.content[]` (token, logprob, bytes, top_logprobs); the
legacy completions API carries parallel lists (`tokens`, `token_logprobs`, `top_logprobs` as
token → logprob maps, `text_offset` in characters). The frontend has no tokenizer: the token
texts come from the engine that generated them.
"""

from __future__ import annotations

from autellix.services.frontend import openai_schema as oa
from autellix.wire.protocol import TokenLogprob, TopLogprob

__all__ = ["chat_logprobs", "completion_logprobs"]


def _top(t: TopLogprob) -> oa.TopLogprobOut:
    return oa.TopLogprobOut(token=t.token, logprob=t.logprob, bytes=t.bytes)


def chat_logprobs(entries: list[TokenLogprob]) -> oa.ChoiceLogprobs:
    """`choices[].logprobs` of a chat answer or chunk."""
    return oa.ChoiceLogprobs(
        content=[
            oa.TokenLogprobOut(
                token=e.token,
                logprob=e.logprob,
                bytes=e.bytes,
                top_logprobs=[_top(t) for t in e.top_logprobs],
            )
            for e in entries
        ]
    )


def completion_logprobs(entries: list[TokenLogprob], text_start: int = 0) -> oa.CompletionLogprobs:
    """`choices[].logprobs` of a completion (or chunk whose text starts at ``text_start``)."""
    offsets, at = [], text_start
    for e in entries:
        offsets.append(at)
        at += len(e.token)
    return oa.CompletionLogprobs(
        tokens=[e.token for e in entries],
        token_logprobs=[e.logprob for e in entries],
        top_logprobs=[{t.token: t.logprob for t in e.top_logprobs} for e in entries],
        text_offset=offsets,
    )
