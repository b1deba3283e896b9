"""Discretized priorities: bin a call's priority value into K queues Q1..QK (0-based here).

Why bins at all: continuous least-attained-service degrades into round-robin among programs with
similar service and thrashes the engine with preemptions; bins make calls inside one queue run
FCFS. The paper gives no K, first quantum or growth factor, so we choose geometric boundaries
(`q, q*g, q*g^2, ...`) and ablate them (docs/scheduling.md).

Level `i` covers values in `[lo_i, hi_i)` with `lo_0 = 0` and `hi_{K-1} = inf`; its quantum is its
width `hi_i - lo_i`. With program-level priority values (PLAS/ATLAS: the program's attained service
plus the call's own progress) "a call that uses up its quantum is demoted one queue" is the same
event as "the value crosses `hi_i`", so a level is always a pure function of the value.

`boundaries=None` means no binning at all: the level *is* the value (continuous LAS, used for the
paper's worked example and as an ablation).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass

# The default queues, written once: the simulator's `MLFQConfig()` and the live scheduler's
# `--levels/--quantum/--growth` flags both start from these (9 queues, the first 64 service units
# wide, each next one twice as wide as the one before).
DEFAULT_LEVELS = 9
DEFAULT_FIRST_QUANTUM = 64.0
DEFAULT_GROWTH = 2.0


def geometric_boundaries(levels: int, first_quantum: float, growth: float) -> tuple[float, ...]:
    """Upper bounds of `levels` geometric queues: `q, q*g, ..., q*g^(levels-2)`."""
    if levels < 1 or first_quantum <= 0 or growth <= 1.0:
        raise ValueError("need levels >= 1, first_quantum > 0, growth > 1")
    return tuple(first_quantum * growth**i for i in range(levels - 1))


@dataclass(frozen=True, slots=True)
class MLFQConfig:
    """Queue boundaries in service units (see `autellix.policy.priority`).

    boundaries: sorted upper bounds `hi_0 < hi_1 < ... < hi_{K-2}` (K-1 numbers for K queues);
        None: continuous priorities (level == value).
    """

    boundaries: tuple[float, ...] | None = geometric_boundaries(
        DEFAULT_LEVELS, DEFAULT_FIRST_QUANTUM, DEFAULT_GROWTH
    )

    def __post_init__(self) -> None:
        b = self.boundaries
        if b is not None:
            if any(x <= 0 for x in b) or any(b[i] >= b[i + 1] for i in range(len(b) - 1)):
                raise ValueError(f"MLFQ boundaries must be positive and increasing: {b}")

    @classmethod
    def geometric(
        cls,
        levels: int | None = None,
        first_quantum: float | None = None,
        growth: float | None = None,
    ) -> MLFQConfig:
        """K = `levels` queues; Q1 holds `[0, q)`, Qi holds `[q*g^(i-2), q*g^(i-1))`.

        A parameter left None takes its default (`DEFAULT_LEVELS`, `DEFAULT_FIRST_QUANTUM`,
        `DEFAULT_GROWTH`), so a caller overriding one knob need not repeat the others.
        """
        return cls(
            geometric_boundaries(
                DEFAULT_LEVELS if levels is None else levels,
                DEFAULT_FIRST_QUANTUM if first_quantum is None else first_quantum,
                DEFAULT_GROWTH if growth is None else growth,
            )
        )

    @classmethod
    def continuous(cls) -> MLFQConfig:
        return cls(None)

    @property
    def levels(self) -> int:
        """Number of queues K (infinite for continuous priorities: reported as 0)."""
        return 0 if self.boundaries is None else len(self.boundaries) + 1

    def level_for(self, value: float) -> float:
        """The queue (0 = highest priority) for a priority value; the value itself if continuous."""
        if self.boundaries is None:
            return value
        return bisect_right(self.boundaries, value)

    def upper(self, value: float) -> float:
        """Smallest value > `value` at which the level changes (inf in the last queue).

        Continuous priorities change at every whole service unit (services are counted in whole
        decode tokens), which is what "re-evaluated every step" means.
        """
        if self.boundaries is None:
            return math.floor(value) + 1.0
        i = bisect_right(self.boundaries, value)
        return self.boundaries[i] if i < len(self.boundaries) else math.inf

    def quantum(self, level: int) -> float:
        """Width of a queue: the service a call may attain there before demotion."""
        if self.boundaries is None:
            return 1.0
        b = self.boundaries
        lo = 0.0 if level == 0 else b[level - 1]
        hi = b[level] if level < len(b) else math.inf
        return hi - lo
