"""Batch formation and preemption: which calls run in the next engine step.

The rule (paper, Algorithm 1, with our tie and cap decisions):
- Walk waiting calls in priority order (queue Q1..QK, FCFS inside a queue). Admit a call while the
  engine has a free sequence slot and KV room; stop at the first call that does not fit (no lower
  call skips past a blocked higher one).
- When it does not fit, it may preempt the lowest-ranked running calls, but only those in a
  *strictly* lower queue (ties keep the running call: no thrashing between equals), and at most
  `max_preemptions` per step (the kungfu-team fork found one per step enough to avoid thrash).
  If preempting the allowed victims would still not make room, nothing is preempted.
- A running call marked `protected` (it has decoded fewer than the policy's `min_run_tokens` in
  its current run) is never a victim: the next lowest-ranked unprotected call is taken instead.
  This stops a call from ping-ponging in and out of the batch, paying its prefill each time.
- Keys are tuples `(level, tiebreak, ...)`; only `level` decides preemption, the whole tuple decides
  order (lower = sooner).

`plan_batch` is the reference implementation over plain data, used by the live engine service.
The simulator implements the same rule with heaps for speed (tests check they agree).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum


class PreemptionMode(StrEnum):
    """How a preempted call's KV cache is handled.

    RECOMPUTE: drop it (vLLM V1); on resume re-prefill the context, minus whatever is still in the
        prefix cache. SWAP: copy it to host memory and back (paper); costs time per token each way.
    """

    RECOMPUTE = "recompute"
    SWAP = "swap"


@dataclass(frozen=True, slots=True)
class PreemptionCost:
    """Cost model of a preemption, as data for the simulator."""

    mode: PreemptionMode = PreemptionMode.RECOMPUTE
    swap_s_per_token: float = 0.0  # one direction; charged on swap-out and again on swap-in

    def swap_seconds(self, context_tokens: int) -> float:
        return self.swap_s_per_token * context_tokens if self.mode is PreemptionMode.SWAP else 0.0


@dataclass(frozen=True, slots=True)
class Candidate:
    """A call the engine may run: its rank key, whether it runs now, and the KV it needs/holds."""

    call_id: Hashable
    key: tuple[float, ...]
    running: bool
    kv_tokens: int = 0
    protected: bool = False  # running, but too young in its run to be preempted


@dataclass(frozen=True, slots=True)
class BatchPlan:
    admit: list[Hashable] = field(default_factory=list)
    preempt: list[Hashable] = field(default_factory=list)


def plan_batch(
    candidates: Sequence[Candidate],
    *,
    max_seqs: int,
    kv_capacity: float = float("inf"),
    max_preemptions: int = 1,
    preemptive: bool = True,
) -> BatchPlan:
    """Decide admissions and priority preemptions for one step (pure; see module docstring)."""
    running = sorted((c for c in candidates if c.running), key=lambda c: c.key)
    waiting = sorted((c for c in candidates if not c.running), key=lambda c: c.key)
    used_kv = sum(c.kv_tokens for c in running)
    slots = max_seqs - len(running)
    admit: list[Hashable] = []
    preempt: list[Hashable] = []
    for w in waiting:
        if slots >= 1 and used_kv + w.kv_tokens <= kv_capacity:
            admit.append(w.call_id)
            slots -= 1
            used_kv += w.kv_tokens
            continue
        if not preemptive:
            break
        # Victims: lowest-ranked running calls in a strictly lower queue, within the cap.
        victims: list[Candidate] = []
        s, kv = slots, used_kv
        budget = max_preemptions - len(preempt)
        for r in reversed(running):
            if s >= 1 and kv + w.kv_tokens <= kv_capacity:
                break
            if len(victims) >= budget or not r.key[0] > w.key[0]:
                break
            if r.protected:
                continue
            victims.append(r)
            s += 1
            kv -= r.kv_tokens
        if not (s >= 1 and kv + w.kv_tokens <= kv_capacity):
            break
        for r in victims:
            running.remove(r)
            preempt.append(r.call_id)
        slots, used_kv = s - 1, kv + w.kv_tokens
        admit.append(w.call_id)
        # the admitted call now runs and may itself be a victim later in this plan
        running.append(w)
        running.sort(key=lambda c: c.key)
    return BatchPlan(admit=admit, preempt=preempt)
