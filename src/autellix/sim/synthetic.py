"""Small synthetic program generators for simulator tests and quick sanity checks.

Not the workload loaders (those live in `autellix.workloads` and read the real public formats):
these only mimic the paper's per-kind means (ShareGPT 6.66 calls of 256/277 tokens, BFCL 10.75
calls of 735/34, LATS ~160 calls of 467/73, multi-threaded) with long-tailed sizes, so the
simulator can be exercised without data files. Deterministic for a seed.
"""

from __future__ import annotations

import numpy as np

from autellix.workloads.types import CallSpec, ProgramSpec


def _lognormal(rng: np.random.Generator, mean: float, sigma: float = 0.8) -> int:
    mu = np.log(mean) - sigma**2 / 2
    return max(1, int(rng.lognormal(mu, sigma)))


def _chat(
    rng,
    pid: str,
    arrival: float,
    kind: str,
    n_calls: int,
    first_prompt: float,
    turn_prompt: float,
    output: float,
    delay_s: float,
) -> ProgramSpec:
    calls = []
    history = 0
    for i in range(n_calls):
        user = _lognormal(rng, first_prompt if i == 0 else turn_prompt)
        out = _lognormal(rng, output)
        calls.append(
            CallSpec(
                index=i,
                thread_id=0,
                parents=(i - 1,) if i else (),
                prompt_tokens=history + user,
                output_tokens=out,
                prefix_tokens=history,
                delay_s=delay_s if i else 0.0,
            )
        )
        history += user + out
    return ProgramSpec(pid, kind, arrival, tuple(calls))


def sharegpt_like(rng: np.random.Generator, pid: str, arrival: float) -> ProgramSpec:
    n = min(60, int(rng.geometric(1 / 6.66)))
    return _chat(rng, pid, arrival, "sharegpt", n, 120, 60, 277, 0.0)


def bfcl_like(rng: np.random.Generator, pid: str, arrival: float) -> ProgramSpec:
    n = min(80, int(rng.geometric(1 / 10.75)))
    return _chat(rng, pid, arrival, "bfcl", n, 600, 30, 34, 0.05)


def lats_like(rng: np.random.Generator, pid: str, arrival: float, width: int = 5) -> ProgramSpec:
    """Tree search: each iteration expands `width` children in parallel, evaluates each, and a
    select call joins them; iterations are long-tailed around the paper's ~160 calls."""
    iters = max(1, min(60, int(rng.geometric(1 / 15.0))))
    calls: list[CallSpec] = []
    system = 350
    prev: tuple[int, ...] = ()
    ctx = system
    for _ in range(iters):
        expand = []
        for k in range(width):
            i = len(calls)
            calls.append(
                CallSpec(i, k, prev, ctx + _lognormal(rng, 40), _lognormal(rng, 90), ctx, 0.1)
            )
            expand.append(i)
        evals = []
        for k, p in enumerate(expand):
            i = len(calls)
            pr = calls[p].context_tokens
            calls.append(CallSpec(i, k, (p,), pr + 30, _lognormal(rng, 40), pr, 0.05))
            evals.append(i)
        i = len(calls)
        calls.append(CallSpec(i, 0, tuple(evals), ctx + 60, _lognormal(rng, 60), ctx, 0.0))
        ctx += 60
        prev = (i,)
    return ProgramSpec(pid, "lats", arrival, tuple(calls))


def mixed(n: int, rate: float, seed: int = 0) -> list[ProgramSpec]:
    """`n` programs, equal thirds ShareGPT/BFCL/LATS-like in random order, Poisson arrivals."""
    rng = np.random.default_rng(seed)
    makers = (sharegpt_like, bfcl_like, lats_like)
    t = 0.0
    out = []
    for i in range(n):
        t += float(rng.exponential(1.0 / rate))
        out.append(makers[int(rng.integers(3))](rng, f"p{i}", t))
    return out
