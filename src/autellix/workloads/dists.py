"""Long-tailed size distributions, parameterised by the mean the paper reports.

The paper gives per-call and per-program *means* for each workload and says all are long-tailed;
it gives no shapes. We use log-normal draws (clipped and, for counts, rounded) whose log-space
location is solved for so that the *clipped* mean equals the paper's mean. The solve uses a fixed
quasi-grid of normal quantiles, so it is deterministic and independent of any run's seed.
"""

from __future__ import annotations

from functools import lru_cache
from statistics import NormalDist

import numpy as np

# Normal quantiles on a fine midpoint grid: the expectation of any function of a standard normal
# is approximated by the mean over these points (deterministic, accurate to ~1e-4 for our uses).
_GRID = 20_000
_Z = np.array([NormalDist().inv_cdf((i + 0.5) / _GRID) for i in range(_GRID)])


def _clipped_mean(mu: float, sigma: float, lo: float, hi: float, integer: bool) -> float:
    x = np.exp(mu + sigma * _Z)
    if integer:
        x = np.rint(x)
    return float(np.clip(x, lo, hi).mean())


@lru_cache(maxsize=256)
def solve_mu(mean: float, sigma: float, lo: float, hi: float, integer: bool) -> float:
    """Log-space location whose clipped (and rounded, if `integer`) log-normal has `mean`."""
    if not lo <= mean <= hi:
        raise ValueError(f"mean {mean} outside [{lo}, {hi}]")
    a, b = np.log(max(lo, 1e-9)) - 10 * sigma, np.log(hi) + 10 * sigma
    for _ in range(100):
        mid = (a + b) / 2
        if _clipped_mean(mid, sigma, lo, hi, integer) < mean:
            a = mid
        else:
            b = mid
    return (a + b) / 2


def lognormal_int(
    rng: np.random.Generator, mean: float, sigma: float, lo: int, hi: int, size: int | None = None
) -> np.ndarray | int:
    """Integers in [lo, hi] from a rounded log-normal whose mean (after clipping) is `mean`."""
    mu = solve_mu(float(mean), float(sigma), float(lo), float(hi), True)
    x = np.clip(np.rint(rng.lognormal(mu, sigma, size)), lo, hi).astype(np.int64)
    return int(x) if size is None else x


def exponential(rng: np.random.Generator, mean: float) -> float:
    """A tool / think time with the given mean; 0 mean means no delay (and draws nothing)."""
    return float(rng.exponential(mean)) if mean > 0 else 0.0
