"""Load balancing of calls across engines: round-robin, least-loaded, data locality.

Locality (paper's Algorithm 2): a call whose prompt is at most `short_prompt_tokens` (2,048) goes
to the least-used engine (fewest calls in flight); a longer call goes to the engine its program is
pinned to, pinning the program to the least-used engine at its first long call. Long prompts are
where a prefix-cache hit saves the most prefill, short ones are cheap to recompute anywhere.

Guard (beyond the paper, SGLang router style): affinity is ignored — the call goes to the
least-used engine — while load is badly skewed: `max - min > guard_abs` and
`max > guard_ratio * min`. Without it a few huge pinned programs can pile onto one engine.

Pure: the caller passes the loads and the program's pin and stores the returned pin. The loads
are a plain sequence (a scan per question: the simulator, a handful of engines) or anything that
answers the same three questions (`Loads`: how many, which is least loaded, the lowest and
highest load) without a scan, as `load_index.LoadIndex` does for a thousand live engines: the
rule is this one function either way, so both give the same choice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


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


class Loads(Protocol):
    """The engines' loads in a fixed order (engine i is the i-th): what `choose_engine` asks."""

    def __len__(self) -> int: ...

    def least(self) -> int:
        """Index of the lowest load, the lowest index on ties."""
        ...

    def lowest(self) -> float: ...

    def highest(self) -> float: ...


@dataclass(frozen=True, slots=True)
class LoadList:
    """`Loads` over a plain sequence: each question is a scan (fine for a few engines)."""

    loads: Sequence[float]

    def __len__(self) -> int:
        return len(self.loads)

    def least(self) -> int:
        return least_loaded(self.loads)

    def lowest(self) -> float:
        return min(self.loads)

    def highest(self) -> float:
        return max(self.loads)


def as_loads(loads: Sequence[float] | Loads) -> Loads:
    """A sequence as `LoadList`; anything that already answers `least` as it is."""
    return loads if hasattr(loads, "least") else LoadList(loads)  # type: ignore[return-value]


def serving(model: str | None, served: Sequence[Sequence[str]]) -> list[int]:
    """Indices of the engines (`served`: each one's model names) that serve `model`; every
    engine when the call names none. A call only ever goes to an engine serving its model."""
    if model is None:
        return list(range(len(served)))
    return [i for i, names in enumerate(served) if model in names]


def least_loaded(loads: Sequence[float]) -> int:
    """Index of the engine with the fewest calls in flight (lowest index on ties)."""
    best = 0
    for i in range(1, len(loads)):
        if loads[i] < loads[best]:
            best = i
    return best


def skewed(loads: Sequence[float] | Loads, cfg: BalancerConfig) -> bool:
    """The SGLang-style guard: is load too uneven to honour affinity?"""
    if cfg.guard_abs is None or len(loads) < 2:
        return False
    view = as_loads(loads)
    hi, lo = view.highest(), view.lowest()
    return hi - lo > cfg.guard_abs and hi > cfg.guard_ratio * lo


def choose_engine(
    cfg: BalancerConfig,
    *,
    loads: Sequence[float] | Loads,
    prompt_tokens: int,
    pin: int | None,
    counter: int = 0,
) -> Choice:
    """Pick an engine for a call. `counter` is the caller's running call count (round-robin)."""
    loads = as_loads(loads)
    n = len(loads)
    if n == 1:
        return Choice(0, pin if pin is not None else None)
    if cfg.kind is BalancerKind.ROUND_ROBIN:
        return Choice(counter % n, pin)
    if cfg.kind is BalancerKind.LEAST_LOADED:
        return Choice(loads.least(), pin)
    if prompt_tokens <= cfg.short_prompt_tokens:
        return Choice(loads.least(), pin)
    if skewed(loads, cfg):
        return Choice(loads.least(), pin)
    if pin is None:
        e = loads.least()
        return Choice(e, e)
    return Choice(pin, pin)
