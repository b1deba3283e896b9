"""ShareGPT conversations as single-threaded chat programs (real file or synthetic).

File format (`ShareGPT_V3_unfiltered_cleaned_split.json`): a JSON array of
`{"id": str, "conversations": [{"from": "human"|"gpt"|"system"|..., "value": str}, ...]}`.
Each `gpt` message is one call; `human`, `system` and any other role add to the prompt. The file
is streamed (see `streaming.py`) and sampled with a seeded reservoir, so `--programs N` on the
650 MB public file keeps only N conversations in memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from autellix.workloads.chat import Message, transcript_to_calls
from autellix.workloads.dists import exponential, lognormal_int
from autellix.workloads.options import WorkloadOptions
from autellix.workloads.streaming import iter_json_records, sample
from autellix.workloads.tokens import TokenCounter
from autellix.workloads.types import ProgramSpec

KIND = "sharegpt"
ASSISTANT_ROLES = frozenset({"gpt", "assistant", "chatgpt", "bard", "bing", "model"})


def _eligible(records: Iterable[Any]) -> Iterator[dict[str, Any]]:
    """Conversations with at least one assistant message (others make no calls)."""
    for r in records:
        conv = r.get("conversations") if isinstance(r, dict) else None
        if isinstance(conv, list) and any(
            isinstance(m, dict) and m.get("from") in ASSISTANT_ROLES for m in conv
        ):
            yield r


def conversation_to_program(
    record: dict[str, Any],
    program_id: str,
    counter: TokenCounter,
    rng: np.random.Generator,
    opts: WorkloadOptions,
) -> ProgramSpec | None:
    """One conversation → one program (None when its first reply already exceeds the context)."""
    turns = [m for m in record["conversations"] if isinstance(m, dict)]
    counts = counter.count_many([str(m.get("value") or "") for m in turns])
    messages = []
    seen_reply = False
    for m, n in zip(turns, counts, strict=True):
        role = "assistant" if m.get("from") in ASSISTANT_ROLES else "user"
        delay = 0.0
        if role == "assistant":
            delay = exponential(rng, opts.sharegpt_think_s) if seen_reply else 0.0
            seen_reply = True
        messages.append(Message(role, n, delay))
    calls = transcript_to_calls(messages, max_context_tokens=opts.max_context_tokens)
    if not calls:
        return None
    return ProgramSpec(
        program_id, KIND, 0.0, calls, {"source": "sharegpt", "id": str(record.get("id", ""))}
    )


def load_sharegpt(
    paths: list[str | Path],
    n: int | None,
    rng: np.random.Generator,
    counter: TokenCounter,
    opts: WorkloadOptions,
    method: str = "reservoir",
) -> list[ProgramSpec]:
    """Up to `n` programs sampled (seeded) from one or more ShareGPT files, in random order."""

    def records() -> Iterator[Any]:
        for p in paths:
            yield from iter_json_records(p)

    # Over-sample a little: a few conversations yield no runnable call (context limit).
    want = None if n is None else n + max(8, n // 20)
    picked = sample(_eligible(records()), want, rng, method)
    out: list[ProgramSpec] = []
    # random order first: the first n of a uniform sample are a uniform sample
    for i in rng.permutation(len(picked)):
        prog = conversation_to_program(picked[i], f"{KIND}-{len(out)}", counter, rng, opts)
        if prog is not None:
            out.append(prog)
        if n is not None and len(out) >= n:
            break
    return out


def synthetic_sharegpt(
    n: int, rng: np.random.Generator, opts: WorkloadOptions
) -> list[ProgramSpec]:
    """ShareGPT-like chat programs with the paper's per-call means and long tails.

    Calls per program, user tokens and reply tokens are independent clipped log-normals (see
    `options.py`); the transcript then goes through the same conversion as the real file.
    """
    out: list[ProgramSpec] = []
    while len(out) < n:
        k = lognormal_int(
            rng, opts.sharegpt_calls_mean, opts.sharegpt_calls_sigma, 1, opts.sharegpt_calls_max
        )
        cap = opts.sharegpt_token_cap
        users = lognormal_int(rng, opts.sharegpt_user_mean, opts.sharegpt_user_sigma, 1, cap, k)
        outs = lognormal_int(rng, opts.sharegpt_output_mean, opts.sharegpt_output_sigma, 1, cap, k)
        msgs: list[Message] = []
        for j in range(k):
            msgs.append(Message("user", int(users[j])))
            delay = exponential(rng, opts.sharegpt_think_s) if j else 0.0
            msgs.append(Message("assistant", int(outs[j]), delay))
        calls = transcript_to_calls(msgs, max_context_tokens=opts.max_context_tokens)
        if calls:
            i = len(out)
            out.append(ProgramSpec(f"{KIND}-syn-{i}", KIND, 0.0, calls, {"source": "synthetic"}))
    return out
