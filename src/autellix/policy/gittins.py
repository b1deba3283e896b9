"""The Gittins index of a program's attained service, learned from finished programs.

Why Gittins: least-attained-service (PLAS/ATLAS) is optimal only when the size distribution has
a decreasing hazard rate (heavy tails); on programs of similar size (BFCL's tool loops) it
round-robins them and is worse than FCFS. The Gittins index is the optimal non-clairvoyant rule
for weighted mean response time under a *known* distribution: LAS-like on heavy tails, FCFS-like
on light ones. We learn the distribution per program class (an agent's name, say) from the
service finished programs attained, and rank a call by its program's index at its attained
service a (PLAS's total by default, or ATLAS's critical path: `GittinsConfig.attained`):

    G(a) = sup_b  E[w · 1(S <= b) | S > a]  /  E[min(S, b) - a | S > a]

Weighting. `w = 1 / output_tokens` ("token", the default) minimises the mean of latency per
output token, the metric Autellix reports and users feel (a 10-token tool call waiting behind a
2,000-token essay is the bad case); `w = 1` ("program") minimises mean program latency.

Levels. G is turned into an *effective remaining size* E (the size of a deterministic program
with the same index: 1/sqrt(G) for token weighting, since a program of exactly S tokens has
G(0) = 1/S^2; 1/G for program weighting), and E is binned by the ordinary MLFQ boundaries. So
engines, preemption across levels and anti-starvation work unchanged; inside a level calls are
served least-E first (`within_level="service"`). `level_with_hysteresis` keeps a running call in
its level until E leaves the level's range by a margin, so an index hovering at a boundary does
not flip the call (and preempt it) back and forth.

Cost. A curve is G evaluated on a fixed geometric grid of attained values (m points) over the n
newest samples of a class, sorted once, in one vectorised pass: O(n log n + n*m) per refresh,
with m fixed (about 45), i.e. linear in the samples. A lookup bisects the grid: O(log m).

Size hints. A call may carry a hint of its program's remaining output tokens. Hinted samples
(the hint, and the remaining output the program really had) are bucketed by the hint on a
half-octave scale and each bucket gets its own curve of *remaining* size, looked up at the
service attained since the hint. Accurate hints make a bucket narrow (the index approaches
SRPT); useless hints make every bucket look like the class's distribution, so they do not hurt
beyond sampling noise; a bucket with too few samples falls back to the class curve.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

from autellix.policy.mlfq import MLFQConfig

GLOBAL_CLASS = ""  # the fallback distribution: every finished program, whatever its class
WEIGHTINGS = ("token", "program")
GRID_CEILING = 2.0**20  # attained service past which a curve no longer changes
ATTAINED = ("atlas", "plas")  # which program service the index is a function of


@dataclass(frozen=True, slots=True)
class GittinsConfig:
    """How the index is learned and mapped onto levels.

    weighting: "token" (mean latency per token) or "program" (mean program latency).
    attained: the service the index reads: "plas" (the program's total, the default) or
        "atlas" (its critical path). Measured in the simulator (cpu-tiny, mixed workload), the
        critical path ranks tree searches ahead of chat programs they outweigh and loses to
        the total (bench/sim/gittins/README.md), so the total is the default.
    window: newest samples kept per class (bounds a refresh's cost and follows drift).
    min_samples: a class (or hint bucket) with fewer real samples uses the next fallback.
    grid_first, grid_ratio: the attained-service grid (0, first, first*ratio, ...).
    prior_sizes: warm-up pseudo-samples (log-uniform: LAS-like until data arrives), used only
        while a distribution has fewer than `min_samples` real samples (with token weighting a
        prior's small sizes would otherwise outweigh every real sample).
    prior_weight: how many real samples the whole prior counts as.
    hysteresis: a running call leaves its level only when E is beyond the level's range by
        this factor.
    hint_bucket: ratio between consecutive hint buckets.
    min_quantum: the least service the index may look ahead (max with the next grid step; see
        `index_at`).
    refresh_every: finished programs between two rebuilds of the tables (bounded rate).
    """

    weighting: str = "token"
    attained: str = "plas"
    window: int = 2000
    min_samples: int = 10
    grid_first: float = 4.0
    grid_ratio: float = 2**0.25
    prior_sizes: tuple[float, ...] = tuple(16.0 * 2**k for k in range(10))
    prior_weight: float = 4.0
    hysteresis: float = 1.25
    hint_bucket: float = 2**0.5
    min_quantum: float = 16.0
    refresh_every: int = 10

    def __post_init__(self) -> None:
        if self.attained not in ATTAINED:
            raise ValueError(f"attained must be one of {', '.join(ATTAINED)}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}")
        if self.grid_ratio <= 1 or self.grid_first <= 0 or self.hint_bucket <= 1:
            raise ValueError("grid_first > 0, grid_ratio > 1 and hint_bucket > 1 are required")

    def weight(self, output_tokens: float) -> float:
        """A finished program's weight in the objective (see module docstring)."""
        return 1.0 / max(1.0, output_tokens) if self.weighting == "token" else 1.0

    def effective(self, index: float) -> float:
        """The effective remaining size of an index value (inf for index 0)."""
        if index <= 0:
            return math.inf
        return 1.0 / math.sqrt(index) if self.weighting == "token" else 1.0 / index


@dataclass(frozen=True, slots=True)
class Sample:
    """One finished program (or, for hint curves, one hinted call): its size in service units
    (critical-path service, or the remaining output after a hint) and its weight."""

    size: float
    weight: float


def attained_grid(cfg: GittinsConfig, top: float) -> tuple[float, ...]:
    """0, then geometric points up to the first past `top` (the largest sample), then on to
    `GRID_CEILING` (where no sample is left, E grows LAS-like: see `build_curve`)."""
    pts = [0.0]
    x = cfg.grid_first
    while x <= max(top * cfg.grid_ratio, GRID_CEILING):
        pts.append(x)
        x *= cfg.grid_ratio
    return tuple(pts)


def index_at(
    sizes: np.ndarray, weights: np.ndarray, grid: np.ndarray, quantum: np.ndarray | None = None
) -> np.ndarray:
    """G at every grid point over samples sorted by size (0 where no sample is larger).

    For attained a, the candidates b are the sample sizes above a (the sup of a step numerator
    over a continuous increasing denominator is reached right at a step). With x_j = s_j - a
    for the samples above a, in size order: numerator N_j = sum_{i<=j} w_i, denominator
    D_j = sum_{i<=j} x_i + (count after j) * x_j. The conditioning on S > a divides both by the
    same mass, so it cancels.

    quantum: per grid point, the least service b - a a candidate must give (the largest sample
    always counts). Why: an empirical distribution is atomic, and without it a sample that ends
    1 token after a makes the index spike (serve 1 token, finish 1 of 60 programs); no
    scheduler re-decides that finely (a run is protected for `min_run_tokens`)."""
    import numpy as np  # here, not at module import: engines import the policy but never this

    n = sizes.size
    if not n:
        return np.zeros(grid.size)
    x = sizes[None, :] - grid[:, None]  # m x n
    above = x > 0
    xm = np.where(above, x, 0.0)
    num = np.cumsum(np.where(above, weights[None, :], 0.0), axis=1)
    after = (n - 1 - np.arange(n))[None, :]
    den = np.cumsum(xm, axis=1) + after * xm
    ok = above
    if quantum is not None:
        last = np.zeros(n, dtype=bool)
        last[-1] = True
        ok = above & ((x >= quantum[:, None]) | last[None, :])
    ratio = np.where(ok, num / np.where(den > 0, den, 1.0), 0.0)
    return ratio.max(axis=1)


@dataclass(frozen=True, slots=True)
class IndexCurve:
    """G and E on the attained grid of one distribution; piecewise constant between points.

    Beyond the largest sample nothing is known; E continues as max(E_last, a) on the grid (a
    program older than all seen is assumed to have as much left as it had so far, LAS-like)."""

    grid: tuple[float, ...]
    index: tuple[float, ...]
    effective: tuple[float, ...]
    samples: int  # real samples behind it (prior excluded)
    source: str  # what it was learned from: "class X", "global", "hint bucket ..."

    def point(self, attained: float) -> int:
        return max(0, bisect_right(self.grid, attained) - 1)

    def index_of(self, attained: float) -> float:
        return self.index[self.point(attained)]

    def effective_of(self, attained: float) -> float:
        return self.effective[self.point(attained)]

    def next_change(self, attained: float) -> float:
        """The next attained value at which E may change (the next grid point; inf past it)."""
        i = self.point(attained)
        return self.grid[i + 1] if i + 1 < len(self.grid) else math.inf


def build_curve(
    samples: Iterable[Sample], cfg: GittinsConfig, source: str, *, prior: bool = True
) -> IndexCurve:
    """The index curve of `samples` (plus the warm-up prior)."""
    real = list(samples)
    pts = [(s.size, s.weight) for s in real if s.size > 0]
    if prior and cfg.prior_sizes and len(real) < cfg.min_samples:
        pw = cfg.prior_weight / len(cfg.prior_sizes)
        pts += [(s, pw * cfg.weight(s)) for s in cfg.prior_sizes]
    pts.sort()
    import numpy as np  # see `index_at`

    sizes = np.array([p[0] for p in pts], dtype=float)
    weights = np.array([p[1] for p in pts], dtype=float)
    grid = attained_grid(cfg, float(sizes[-1]) if sizes.size else cfg.grid_first)
    at = np.array(grid)
    quantum = np.maximum(cfg.min_quantum, at * (cfg.grid_ratio - 1.0))
    g = index_at(sizes, weights, at, quantum)
    idx = tuple(float(v) for v in g)
    eff = [cfg.effective(v) for v in idx]
    # where no sample is left above a grid point, continue LAS-like from the last known value
    last = 0.0
    for i, e in enumerate(eff):
        if math.isinf(e):
            eff[i] = max(last, grid[i])
        last = eff[i]
    return IndexCurve(grid, idx, tuple(eff), len(real), source)


def hint_bucket(cfg: GittinsConfig, hint: float) -> int:
    """The bucket of a hint (expected remaining output tokens) on the `hint_bucket` scale."""
    return math.floor(math.log(max(1.0, hint)) / math.log(cfg.hint_bucket))


@lru_cache(maxsize=4096)
def hint_prior(cfg: GittinsConfig, bucket: int) -> IndexCurve:
    """The warm-up curve of a hint bucket: pseudo-samples spread over the bucket (a hint is
    believed until enough hinted programs finished to check it)."""
    lo = cfg.hint_bucket**bucket
    sizes = [lo * cfg.hint_bucket ** (k / 4) for k in range(5)]
    return build_curve(
        [Sample(x, cfg.weight(x)) for x in sizes], cfg, f"hint prior {bucket}", prior=False
    )


@dataclass(frozen=True, slots=True)
class Lookup:
    """What a rank decision used: the curve, the attained service it was read at, and the
    index and effective size there (recorded with the decision, shown by `calls explain`)."""

    curve: IndexCurve
    attained: float
    index: float
    effective: float
    program_class: str
    hint: float | None


@dataclass(frozen=True, slots=True)
class GittinsTables:
    """Index curves per class and per (class, hint bucket), with a global fallback: an immutable
    snapshot, rebuilt from the history at a bounded rate and read by every decision."""

    cfg: GittinsConfig
    curves: Mapping[str, IndexCurve]
    hinted: Mapping[tuple[str, int], IndexCurve] = field(default_factory=dict)
    version: int = 0

    def curve_for(self, program_class: str | None, hint: float | None = None) -> IndexCurve:
        """The curve a program of this class (and hint) is ranked by, with fallbacks:
        hint bucket of the class, of all classes, the warm-up prior of the bucket (the hint
        taken at face value until hints were checked against outcomes), then the class, then
        global."""
        cls = program_class or GLOBAL_CLASS
        if hint is not None:
            b = hint_bucket(self.cfg, hint)
            for key in ((cls, b), (GLOBAL_CLASS, b)):
                c = self.hinted.get(key)
                if c is not None and c.samples >= self.cfg.min_samples:
                    return c
            return hint_prior(self.cfg, b)
        c = self.curves.get(cls)
        if c is not None and c.samples >= self.cfg.min_samples:
            return c
        return self.curves[GLOBAL_CLASS]

    def lookup(
        self,
        program_class: str | None,
        attained: float,
        *,
        hint: float | None = None,
        since_hint: float = 0.0,
    ) -> Lookup:
        """Index and effective size of a program at `attained` service; with a hint, of its
        remaining size at the service attained since the hint (`since_hint`)."""
        curve = self.curve_for(program_class, hint)
        a = max(0.0, since_hint) if curve.source.startswith("hint") else max(0.0, attained)
        i = curve.point(a)
        return Lookup(
            curve=curve,
            attained=a,
            index=curve.index[i],
            effective=curve.effective[i],
            program_class=program_class or GLOBAL_CLASS,
            hint=hint,
        )


class GittinsHistory:
    """The finished programs' samples per class (bounded windows) that tables are built from.

    The one mutable part: the simulator feeds it as programs finish; the live scheduler fills
    it from Postgres (`autellix.store.gittins`). `tables()` returns an immutable snapshot."""

    def __init__(self, cfg: GittinsConfig) -> None:
        self.cfg = cfg
        self.by_class: dict[str, deque[Sample]] = {GLOBAL_CLASS: deque(maxlen=cfg.window)}
        self.hinted: dict[tuple[str, int], deque[Sample]] = {}
        self.finished = 0
        self.version = 0
        self._built_at = -1

    def add(self, program_class: str | None, size: float, output_tokens: float) -> None:
        """A finished program: its critical-path service and its output tokens."""
        s = Sample(float(size), self.cfg.weight(output_tokens))
        cls = program_class or GLOBAL_CLASS
        for key in {cls, GLOBAL_CLASS}:
            self.by_class.setdefault(key, deque(maxlen=self.cfg.window)).append(s)
        self.finished += 1

    def add_hint(
        self, program_class: str | None, hint: float, remaining: float, output_tokens: float
    ) -> None:
        """A hinted call of a finished program: the hint and the output that really remained."""
        s = Sample(float(remaining), self.cfg.weight(output_tokens))
        b = hint_bucket(self.cfg, hint)
        for key in {(program_class or GLOBAL_CLASS, b), (GLOBAL_CLASS, b)}:
            self.hinted.setdefault(key, deque(maxlen=self.cfg.window)).append(s)

    def due(self) -> bool:
        """Whether enough programs finished since the last build (the bounded refresh rate)."""
        return self._built_at < 0 or self.finished - self._built_at >= self.cfg.refresh_every

    def tables(self) -> GittinsTables:
        """Rebuild every curve from the current windows."""
        cfg = self.cfg
        curves = {
            cls: build_curve(s, cfg, f"class {cls}" if cls else "global")
            for cls, s in self.by_class.items()
        }
        hinted = {
            key: build_curve(s, cfg, f"hint bucket {key[1]} of {key[0] or 'all'}", prior=False)
            for key, s in self.hinted.items()
            if len(s) >= cfg.min_samples
        }
        self._built_at = self.finished
        self.version += 1
        return GittinsTables(cfg, curves, hinted, self.version)


def empty_tables(cfg: GittinsConfig | None = None) -> GittinsTables:
    """The warm-up tables (prior only), before any program finished."""
    return GittinsHistory(cfg or GittinsConfig()).tables()


def level_with_hysteresis(
    mlfq: MLFQConfig, effective: float, current: int | None, margin: float
) -> int:
    """The level of an effective size; a call at `current` stays there while E is within the
    level's range widened by `margin` (lower bound / margin, upper bound * margin)."""
    level = int(mlfq.level_for(effective))
    if current is None or level == current or mlfq.boundaries is None:
        return level
    b = mlfq.boundaries
    lo = b[current - 1] / margin if current > 0 else -math.inf
    hi = b[current] * margin if current < len(b) else math.inf
    return current if lo <= effective < hi else level


def samples_of(pairs: Sequence[tuple[float, float]], cfg: GittinsConfig) -> list[Sample]:
    """(size, output tokens) pairs as weighted samples."""
    return [Sample(float(s), cfg.weight(o)) for s, o in pairs]
