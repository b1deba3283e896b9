"""Load balancing of calls across engines: round-robin, least-loaded, data locality.

Locality (paper's Algorithm 2): a call whose prompt is at most `short_prompt_tokens` (2,048) goes
to the least-used engine (fewest calls in flight); a longer call goes to the engine its program is
pinned to, pinning the program to the least-used engine at its first long call. Long prompts are
where a prefix-cache hit saves the most prefill, short ones are cheap to recompute anywhere.

Guard (beyond the paper, SGLang router style): affinity is ignored — the call goes to the
least-used engine — while load is badly skewed: `max - min > guard_abs` and
`max > guard_ratio * min`. Without it a few huge pinned programs can pile onto one engine.

Pure: the caller passes the loads and the program's pin and stores the returned pin.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum


class BalancerKind(StrEnum):
    ROUND_ROBIN = "round-robin"
    LEAST_LOADED = "least-loaded"
    LOCALITY = "locality"


@dataclass(frozen=True, slots=True)
class BalancerConfig:
    kind: BalancerKind = BalancerKind.LOCALITY
    short_prompt_tokens: int = 2048
    guard_abs: float | None = 64.0  # None disables the guard
    guard_ratio: float = 1.5


@dataclass(frozen=True, slots=True)
class Choice:
    engine: int
    pin: int | None  # the program's pin after this call (unchanged unless newly pinned)


def least_loaded(loads: Sequence[float]) -> int:
    """Index of the engine with the fewest calls in flight (lowest index on ties)."""
    best = 0
    for i in range(1, len(loads)):
        if loads[i] < loads[best]:
            best = i
    return best


def skewed(loads: Sequence[float], cfg: BalancerConfig) -> bool:
    """The SGLang-style guard: is load too uneven to honour affinity?"""
    if cfg.guard_abs is None or len(loads) < 2:
        return False
    hi, lo = max(loads), min(loads)
    return hi - lo > cfg.guard_abs and hi > cfg.guard_ratio * lo


def choose_engine(
    cfg: BalancerConfig,
    *,
    loads: Sequence[float],
    prompt_tokens: int,
    pin: int | None,
    counter: int = 0,
) -> Choice:
    """Pick an engine for a call. `counter` is the caller's running call count (round-robin)."""
    n = len(loads)
    if n == 1:
        return Choice(0, pin if pin is not None else None)
    if cfg.kind is BalancerKind.ROUND_ROBIN:
        return Choice(counter % n, pin)
    if cfg.kind is BalancerKind.LEAST_LOADED:
        return Choice(least_loaded(loads), pin)
    if prompt_tokens <= cfg.short_prompt_tokens:
        return Choice(least_loaded(loads), pin)
    if skewed(loads, cfg):
        return Choice(least_loaded(loads), pin)
    if pin is None:
        e = least_loaded(loads)
        return Choice(e, e)
    return Choice(pin, pin)
