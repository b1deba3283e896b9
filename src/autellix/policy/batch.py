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

The rule's parts are functions of their own: `can_admit` (a free slot and KV room),
`outranks` (strictly lower queue), `run_protected` (too young in its run) and `choose_victim`
(the walk from the worst running call up). `plan_batch` composes them over plain data for the
live engine service; the simulator's engine composes the same functions over its heaps (it keeps
a prefix cache whose state changes with every admission, which a list of candidates cannot
express). `tests/unit/test_admission_parity.py` drives both through the same events and checks
they admit and preempt the same calls.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeVar

T = TypeVar("T")


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


def can_admit(
    *, free_slots: int, used_kv: float, kv_tokens: float, kv_capacity: float, idle: bool = False
) -> bool:
    """A waiting call fits: a free sequence slot, and KV room for what it needs.

    An idle engine (nothing running) takes the call even when its KV does not fit: nothing could
    ever free more room, so refusing would leave it waiting for good."""
    return free_slots >= 1 and (idle or used_kv + kv_tokens <= kv_capacity)


def outranks(waiting_level: float, running_level: float) -> bool:
    """Whether a waiting call may displace a running one: only from a *strictly* better queue
    (ties keep the running call, so equals never thrash)."""
    return running_level > waiting_level


def run_protected(run_tokens: int, min_run_tokens: int) -> bool:
    """A running call that has decoded fewer than `min_run_tokens` in its current run is no
    priority victim (it would pay its prefill again for nothing)."""
    return run_tokens < min_run_tokens


def choose_victim(worst_first: Iterable[tuple[float, bool, T]], waiting_level: float) -> T | None:
    """The running call a waiting call of `waiting_level` preempts, or None.

    `worst_first` yields `(level, protected, call)` from the lowest-ranked running call up; the
    walk stops at the first call the waiting one does not outrank and skips protected ones. It
    consumes the iterator only up to the call it returns, so a caller taking several victims
    passes the same iterator again."""
    for level, protected, call in worst_first:
        if not outranks(waiting_level, level):
            return None
        if protected:
            continue
        return call
    return None


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

    def fits(s: int, kv: float, w: Candidate, idle: bool = False) -> bool:
        return can_admit(
            free_slots=s, used_kv=kv, kv_tokens=w.kv_tokens, kv_capacity=kv_capacity, idle=idle
        )

    for w in waiting:
        if fits(slots, used_kv, w, idle=not running):
            admit.append(w.call_id)
            slots -= 1
            used_kv += w.kv_tokens
            running.append(w)
            running.sort(key=lambda c: c.key)
            continue
        if not preemptive:
            break
        # Victims: lowest-ranked running calls in a strictly lower queue, within the cap.
        victims: list[Candidate] = []
        s, kv = slots, used_kv
        budget = max_preemptions - len(preempt)
        walk: Iterator[tuple[float, bool, Candidate]] = (
            (r.key[0], r.protected, r) for r in reversed(running)
        )
        # (no idle exception here: emptying the batch for a call that cannot fit is useless)
        while not fits(s, kv, w) and len(victims) < budget:
            r = choose_victim(walk, w.key[0])
            if r is None:
                break
            victims.append(r)
            s += 1
            kv -= r.kv_tokens
        if not fits(s, kv, w):
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
