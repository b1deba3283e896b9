"""Every modelling constant of the workloads, in one place, with where its value comes from.

Paper (arXiv 2502.13965, workload table) per-call means: ShareGPT 6.66 calls/program, 256 prompt
/ 277 output tokens; BFCL 10.75 calls, 735 / 34; LATS 159.7 calls, 467 / 73; all long-tailed.
Shapes (log-normal sigmas, caps) and tool times are not in the paper: they are our estimates,
chosen once from the public data's character (not tuned to any policy) and listed here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class WorkloadOptions:
    """Knobs of the loaders and generators. Defaults are the documented estimates."""

    # --- shared -------------------------------------------------------------------------------
    # A call whose prompt + output would exceed this is dropped with the rest of its program (a
    # chat hitting the model's context limit ends). Keeps every call runnable on a small engine.
    max_context_tokens: int = 8192

    # --- ShareGPT (real file or synthetic) ----------------------------------------------------
    # Human think time between a reply and the next user turn. 0: the paper replays conversations
    # back to back; a person's reading time is not serving latency.
    sharegpt_think_s: float = 0.0
    # Synthetic ShareGPT-like: the paper's per-call 256 prompt tokens are taken as the *new* user
    # tokens of a call (the full prompt also carries the history, which is the cached prefix).
    sharegpt_calls_mean: float = 6.66
    sharegpt_calls_sigma: float = 0.9
    sharegpt_calls_max: int = 64
    sharegpt_user_mean: float = 256.0
    sharegpt_user_sigma: float = 1.1
    sharegpt_output_mean: float = 277.0
    sharegpt_output_sigma: float = 0.8
    sharegpt_token_cap: int = 2048

    # --- BFCL (real file or synthetic) --------------------------------------------------------
    # Calls per entry: each ground-truth function call in `path` is one model step (a function
    # call whose result comes back), plus one final answer per turn. On BFCL v3/v4 multi-turn base
    # this gives ~10 calls/entry, matching the paper's 10.75. Entries without `path` (single-turn
    # categories) are one call per turn.
    bfcl_system_tokens: int = 64  # the harness's system prompt
    # Function docs of an `involved_classes` API are not in the entry (they live in
    # multi_turn_func_doc/); the full docs are ~3.5k tokens per class, yet the paper's mean prompt
    # is 735 tokens, so its harness sent a compact form: we take 100 tokens per class, and 24
    # tokens per function result (BFCL's APIs return short dicts); together they give the
    # paper's mean prompt (~740 on the synthetic generator).
    bfcl_class_doc_tokens: int = 100
    bfcl_output_mean: float = 34.0
    bfcl_output_sigma: float = 0.7
    bfcl_output_cap: int = 512
    bfcl_tool_result_mean: float = 24.0  # tokens of a function's returned value
    bfcl_tool_result_sigma: float = 1.0
    bfcl_tool_s: float = 0.1  # function execution time (local Python APIs: fast)
    bfcl_think_s: float = 0.0  # user time between turns, as for ShareGPT
    # Synthetic BFCL-like: turns per entry and function-call steps per turn (geometric).
    bfcl_turns_mean: float = 4.3
    bfcl_turns_sigma: float = 0.35
    bfcl_turns_max: int = 12
    bfcl_steps_per_turn_mean: float = 1.5
    bfcl_user_mean: float = 45.0
    bfcl_user_sigma: float = 0.6
    bfcl_classes_mean: float = 1.6

    # --- LATS (synthetic tree search) ---------------------------------------------------------
    # One iteration = expand k children in parallel (k threads) + evaluate each child (same
    # thread, after its expansion and the tool call it issued) + one select/reflect call joining
    # all k evaluations. LATS on HotpotQA uses k = 5. Calls = iterations * (2k + 1).
    lats_children: int = 5
    lats_calls_mean: float = 159.7
    lats_iterations_sigma: float = 0.8
    lats_iterations_max: int = 50
    lats_prompt_mean: float = 467.0
    # Shared, per-program part of every prompt (instructions + few-shot + question): the prefix a
    # program's calls can reuse from the cache. The rest of a prompt is its own trajectory.
    lats_shared_prompt_mean: float = 250.0
    lats_prompt_sigma: float = 0.5
    # tokens of a prompt that no earlier call of the program produced (latest observation or the
    # evaluation instruction); the rest of the prompt is the cacheable prefix
    lats_new_tokens_mean: float = 64.0
    lats_output_mean: float = 73.0
    lats_output_sigma: float = 0.8
    lats_output_cap: int = 1024
    lats_tool_s: float = 0.5  # a Wikipedia search / lookup action after each expansion


def override_options(base: WorkloadOptions, overrides: Mapping[str, Any]) -> WorkloadOptions:
    """`base` with the named fields replaced (`--workload-option KEY=VALUE` of the CLIs).

    Raises ValueError naming the unknown keys and the known ones, so a typo is refused, not
    silently ignored."""
    if not overrides:
        return base
    names = {f.name for f in dataclasses.fields(WorkloadOptions)}
    bad = sorted(set(overrides) - names)
    if bad:
        raise ValueError(f"unknown workload options {bad}; known: {', '.join(sorted(names))}")
    return dataclasses.replace(base, **overrides)
