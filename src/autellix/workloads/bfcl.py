"""BFCL (Berkeley Function-Calling Leaderboard v3/v4) entries as single-threaded programs.

File format (`BFCL_v3_*.json`, `BFCL_v4_*.json`): JSON Lines; each object has `id`, `question` (a
list of turns, each a list of `{role, content}` messages) and either `function` (the function
docs, single-turn categories) or `involved_classes` (multi-turn categories, whose docs live in
separate files), and in multi-turn categories `path` (the ground-truth function calls in order).

The entries hold no model outputs, so output lengths, tool results and tool times are estimates
(see `options.py`); the turn structure, user messages, docs and number of calls are real.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from autellix.workloads.chat import Message, transcript_to_calls
from autellix.workloads.dists import exponential, lognormal_int
from autellix.workloads.options import WorkloadOptions
from autellix.workloads.streaming import iter_json_records, sample
from autellix.workloads.tokens import TokenCounter
from autellix.workloads.types import ProgramSpec

KIND = "bfcl"


def _steps_per_turn(n_steps: int, n_turns: int) -> list[int]:
    """Spread the ground-truth function calls over the turns in order, as evenly as possible."""
    base, extra = divmod(n_steps, n_turns)
    return [base + (1 if t < extra else 0) for t in range(n_turns)]


def build_program(
    program_id: str,
    user_tokens: list[int],
    steps: list[int] | None,
    docs_tokens: int,
    rng: np.random.Generator,
    opts: WorkloadOptions,
    meta: dict[str, str],
) -> ProgramSpec | None:
    """The calls of one entry: per turn, `steps[t]` function-call steps then a final answer.

    `steps` None: a single-turn category (one call per turn, no tool round trip).
    """
    msgs: list[Message] = []
    first = True
    for t, u in enumerate(user_tokens):
        msgs.append(Message("user", u))
        n_calls = 1 if steps is None else steps[t] + 1
        for s in range(n_calls):
            delay = 0.0
            if not first:
                # after a final answer, the user's next turn; after a step, the tool's run
                delay = exponential(rng, opts.bfcl_think_s if s == 0 else opts.bfcl_tool_s)
            first = False
            out = lognormal_int(
                rng, opts.bfcl_output_mean, opts.bfcl_output_sigma, 1, opts.bfcl_output_cap
            )
            msgs.append(Message("assistant", out, delay))
            if steps is not None and s < n_calls - 1:
                res = lognormal_int(
                    rng,
                    opts.bfcl_tool_result_mean,
                    opts.bfcl_tool_result_sigma,
                    1,
                    opts.max_context_tokens,
                )
                msgs.append(Message("tool", res))
    calls = transcript_to_calls(
        msgs,
        max_context_tokens=opts.max_context_tokens,
        base_tokens=opts.bfcl_system_tokens + docs_tokens,
    )
    return ProgramSpec(program_id, KIND, 0.0, calls, meta) if calls else None


def entry_to_program(
    entry: dict[str, Any],
    program_id: str,
    counter: TokenCounter,
    rng: np.random.Generator,
    opts: WorkloadOptions,
) -> ProgramSpec | None:
    """One BFCL entry → one program (None when it has no turn or no runnable call)."""
    turns = entry.get("question") or []
    if not isinstance(turns, list) or not turns:
        return None
    texts = []
    for turn in turns:
        msgs = turn if isinstance(turn, list) else [turn]
        texts.append("\n".join(str(m.get("content") or "") for m in msgs if isinstance(m, dict)))
    user_tokens = counter.count_many(texts)
    if entry.get("function"):
        docs = counter.count(json.dumps(entry["function"]))
    else:
        docs = opts.bfcl_class_doc_tokens * len(entry.get("involved_classes") or [])
    path = entry.get("path")
    multi = isinstance(path, list) or "involved_classes" in entry
    steps = _steps_per_turn(len(path or []), len(turns)) if multi else None
    meta = {"source": "bfcl", "id": str(entry.get("id", ""))}
    return build_program(program_id, user_tokens, steps, docs, rng, opts, meta)


def _entries(paths: list[str | Path]) -> Iterator[dict[str, Any]]:
    for p in paths:
        for e in iter_json_records(p):
            if isinstance(e, dict) and e.get("question"):
                yield e


def load_bfcl(
    paths: list[str | Path],
    n: int | None,
    rng: np.random.Generator,
    counter: TokenCounter,
    opts: WorkloadOptions,
    method: str = "reservoir",
) -> list[ProgramSpec]:
    """Up to `n` programs sampled (seeded) from one or more BFCL files, in random order.

    Multi-turn entries are preferred: single-turn entries (one call) are used only when the files
    hold no multi-turn entry, since the paper's BFCL programs are the multi-turn ones.
    """
    entries = list(_entries(paths)) if n is None else None
    if entries is None:
        multi = sample((e for e in _entries(paths) if "involved_classes" in e), n, rng, method)
        entries = multi or sample(_entries(paths), n, rng, method)
    elif any("involved_classes" in e for e in entries):
        entries = [e for e in entries if "involved_classes" in e]
    out = []
    for i, e in enumerate(entries):
        p = entry_to_program(e, f"{KIND}-{i}", counter, rng, opts)
        if p is not None:
            out.append(p)
    order = rng.permutation(len(out))
    return [out[i] for i in order]


def synthetic_bfcl(n: int, rng: np.random.Generator, opts: WorkloadOptions) -> list[ProgramSpec]:
    """BFCL-like multi-turn programs: turns, steps per turn and token counts drawn long-tailed."""
    out: list[ProgramSpec] = []
    p_step = 1.0 / (1.0 + opts.bfcl_steps_per_turn_mean)  # geometric on {0, 1, ...}
    while len(out) < n:
        turns = lognormal_int(
            rng, opts.bfcl_turns_mean, opts.bfcl_turns_sigma, 1, opts.bfcl_turns_max
        )
        users = [
            int(x)
            for x in lognormal_int(rng, opts.bfcl_user_mean, opts.bfcl_user_sigma, 1, 2048, turns)
        ]
        steps = [int(x) - 1 for x in rng.geometric(p_step, turns)]
        classes = 1 + int(rng.poisson(opts.bfcl_classes_mean - 1))
        docs = opts.bfcl_class_doc_tokens * classes
        i = len(out)
        prog = build_program(
            f"{KIND}-syn-{i}", users, steps, docs, rng, opts, {"source": "synthetic"}
        )
        if prog is not None:
            out.append(prog)
    return out
