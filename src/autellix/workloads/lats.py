"""LATS-style tree search (HotpotQA) as synthetic multi-threaded programs.

Language Agent Tree Search repeats: select a node, expand it into k children in parallel (each an
LLM call proposing a thought + action, followed by the action's tool call), evaluate every child
(an LLM value call), then back-propagate and reflect. We model one iteration as

    k parallel `expand` calls (threads 0..k-1; parent: the previous iteration's select call)
    k `evaluate` calls (thread i after expand i and its tool time)
    1 `select` call on thread 0 whose parents are all k evaluations (a join)

so a program has iterations x (2k + 1) calls, and the number of iterations is long-tailed (a
search stops early when it finds an answer). Sizes match the paper's LATS means (159.7 calls,
467 prompt / 73 output tokens per call).

Prompt = the program's shared part (instructions, few-shot, question) + the node's own part (the
trajectory to the node, itself made of earlier calls' outputs and observations). Only the newest
tokens of a prompt (the latest observation, or the evaluation instruction) are new to the
engine; the rest is the reusable prefix, if the engine still holds the program's context, and
never more than the context of the call's longest parent (what a real engine can have cached).
"""

from __future__ import annotations

import numpy as np

from autellix.workloads.dists import exponential, lognormal_int
from autellix.workloads.options import WorkloadOptions
from autellix.workloads.types import CallSpec, ProgramSpec

KIND = "lats"


def lats_program(program_id: str, rng: np.random.Generator, opts: WorkloadOptions) -> ProgramSpec:
    """One tree-search program; deterministic for the generator's state."""
    k = opts.lats_children
    per_iter = 2 * k + 1
    iters = lognormal_int(
        rng,
        opts.lats_calls_mean / per_iter,
        opts.lats_iterations_sigma,
        1,
        opts.lats_iterations_max,
    )
    n = iters * per_iter
    cap = opts.max_context_tokens // 2
    shared = lognormal_int(rng, opts.lats_shared_prompt_mean, opts.lats_prompt_sigma, 16, cap)
    own_mean = opts.lats_prompt_mean - opts.lats_shared_prompt_mean
    own = lognormal_int(rng, own_mean, opts.lats_prompt_sigma, 1, cap, n)
    outs = lognormal_int(
        rng, opts.lats_output_mean, opts.lats_output_sigma, 1, opts.lats_output_cap, n
    )
    new = lognormal_int(rng, opts.lats_new_tokens_mean, opts.lats_prompt_sigma, 1, cap, n)
    calls: list[CallSpec] = []

    def add(thread: int, parents: tuple[int, ...], delay: float) -> int:
        i = len(calls)
        prompt = int(shared + own[i])
        # All but the newest tokens of the node's own part (the latest observation or the
        # evaluation instruction) were context of earlier calls, but a prompt can only reuse
        # what one parent actually held (its prompt + output): a reused prefix longer than
        # that would be free prefill in the simulator that no real engine (and no live
        # replay, which builds the prompt from the parent's tokens) can realize. Root calls
        # (the first expansion) have no parent context: they start concurrently.
        parent_context = max((calls[p].context_tokens for p in parents), default=0)
        calls.append(
            CallSpec(
                index=i,
                thread_id=thread,
                parents=parents,
                prompt_tokens=prompt,
                output_tokens=int(outs[i]),
                prefix_tokens=min(prompt - min(int(new[i]), int(own[i])), parent_context),
                delay_s=delay,
            )
        )
        return i

    select: int | None = None
    for _ in range(iters):
        parents = () if select is None else (select,)
        expands = [add(t, parents, 0.0) for t in range(k)]
        evals = [add(t, (e,), exponential(rng, opts.lats_tool_s)) for t, e in enumerate(expands)]
        select = add(0, tuple(evals), 0.0)
    return ProgramSpec(program_id, KIND, 0.0, tuple(calls), {"source": "synthetic"})


def synthetic_lats(n: int, rng: np.random.Generator, opts: WorkloadOptions) -> list[ProgramSpec]:
    """`n` tree-search programs."""
    return [lats_program(f"{KIND}-syn-{i}", rng, opts) for i in range(n)]
