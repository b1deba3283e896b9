"""Program arrival processes: Poisson (the paper's) and a bursty alternative.

Arrival times at different rates use *common random numbers*: one sequence of unit-mean gaps per
seed, scaled by 1/rate. Every policy and every rate of a sweep then sees the same arrival pattern,
so differences between points come from load and policy, not from sampling noise.

`bursty`: gamma-distributed gaps with coefficient of variation `cv` > 1 (shape 1/cv^2), the same
mean rate as Poisson (cv = 1 is exactly Poisson). With cv = 3 most programs arrive in tight
clusters separated by long quiet spells.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from autellix.workloads.types import ProgramSpec

PROCESSES = ("poisson", "bursty")


def unit_gaps(n: int, seed: int, process: str = "poisson", cv: float = 3.0) -> np.ndarray:
    """`n` inter-arrival gaps with mean 1 (the first program arrives after one gap)."""
    rng = np.random.default_rng([seed, 0xA1])
    if process == "poisson":
        return rng.exponential(1.0, n)
    if process == "bursty":
        if cv <= 0:
            raise ValueError("cv must be > 0")
        shape = 1.0 / (cv * cv)
        return rng.gamma(shape, 1.0 / shape, n)
    raise ValueError(f"unknown arrival process {process!r}: one of {PROCESSES}")


def with_arrivals(
    programs: list[ProgramSpec],
    rate: float,
    seed: int,
    process: str = "poisson",
    cv: float = 3.0,
) -> list[ProgramSpec]:
    """Copies of `programs`, in order, arriving at `rate` programs/s (first one at t = 0)."""
    if rate <= 0:
        raise ValueError("rate must be > 0")
    gaps = unit_gaps(len(programs), seed, process, cv) / rate
    times = np.concatenate(([0.0], np.cumsum(gaps[:-1]))) if len(programs) else gaps
    return [
        dataclasses.replace(p, arrival_s=float(t)) for p, t in zip(programs, times, strict=True)
    ]
