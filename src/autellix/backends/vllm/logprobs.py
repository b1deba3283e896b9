"""vLLM's per-token log-probabilities in the protocol's shape (`TokenLogprob`).

vLLM returns, per generated token, a dict token id → `Logprob` (logprob, rank) holding the
sampled token and the `logprobs` most likely ones. Requests run with `detokenize=False`, so the
token text is decoded here, one token at a time, as vLLM's own OpenAI server does; the bytes
are that text's UTF-8 (a token holding part of a character decodes to U+FFFD, as there).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from autellix.wire.protocol import TokenLogprob, TopLogprob

__all__ = ["LOGPROB_FLOOR", "convert"]

#: what -inf (or NaN) becomes: JSON has no infinities, OpenAI uses the same floor
LOGPROB_FLOOR = -9999.0


def _finite(value: float) -> float:
    if math.isnan(value) or value < LOGPROB_FLOOR:
        return LOGPROB_FLOOR
    return min(0.0, float(value))


def _top(token_id: int, logprob: float, decode: Callable[[int], str]) -> TopLogprob:
    text = decode(token_id)
    return TopLogprob(
        token_id=token_id, token=text, logprob=_finite(logprob), bytes=list(text.encode())
    )


def convert(
    token_ids: Sequence[int],
    logprobs: Sequence[Mapping[int, Any]] | None,
    top: int,
    decode: Callable[[int], str],
) -> list[TokenLogprob] | None:
    """One `TokenLogprob` per id of ``token_ids`` from vLLM's per-position dicts (None when vLLM
    sent none); candidates sorted by rank, at most ``top`` of them."""
    if logprobs is None:
        return None
    out = []
    for token_id, position in zip(token_ids, logprobs, strict=False):
        chosen = position.get(token_id)
        ranked = sorted(position.items(), key=lambda kv: (kv[1].rank or 0, -kv[1].logprob))
        cands = [_top(t, lp.logprob, decode) for t, lp in ranked[:top]]
        lp = chosen.logprob if chosen is not None else LOGPROB_FLOOR
        first = _top(token_id, lp, decode)
        out.append(TokenLogprob(**first.model_dump(), top_logprobs=cands))
    return out
