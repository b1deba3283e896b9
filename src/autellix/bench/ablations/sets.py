"""The ablation sets: per set, a workload, labelled policy variants (label -> (policy,
options)), and where a set differs from the defaults its rates, engines or profile options.

Kept apart from running them: what each set compares is read in one place, and `--only` is
checked against these names before anything runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from autellix.policy import MLFQConfig, PreemptionCost, PreemptionMode
from autellix.sim import load_profile
from autellix.sim.sweep import analytic_capacity
from autellix.workloads.types import ProgramSpec

FACTORS = (0.1, 0.5, 0.8, 1.0, 1.25, 1.6, 2.0, 3.2)  # x estimated capacity
SWAP = PreemptionCost(PreemptionMode.SWAP)
# Age bounds (beyond the paper) for the A100 profile; the cpu-tiny engine is ~10x slower on the
# same workload (capacity ratio), so its ages are scaled by that ratio (see `_age_scale`).
AGES_GPU = (300.0, 600.0, 1200.0)
# Balancer sets: 3.2x is left out (the 8-engine set has 8x the programs of the 1-engine one)
BALANCE_FACTORS = (0.1, 0.5, 0.8, 1.0, 1.25, 1.6, 2.0)
ENGINE_COUNTS = (1, 2, 4, 8)

Variant = tuple[str, dict[str, Any]]
ProgramsOf = Callable[[str], list[ProgramSpec]]


def _age_scale(profile: str, programs: list[ProgramSpec]) -> float:
    """How many times slower `profile` serves `programs` than the A100 profile (capacity ratio):
    the factor the age bounds are scaled by, so an age means the same load on both."""
    gpu = analytic_capacity(programs, load_profile("gpu-a100-llama8b"))
    return gpu / analytic_capacity(programs, load_profile(profile))


def sets(profile: str, programs_of: ProgramsOf) -> dict[str, dict[str, Any]]:
    """The ablation sets: workload, variants (label -> (policy, options)), engines."""
    mixed_scale = _age_scale(profile, programs_of("mixed"))
    ages = [round(a * mixed_scale, -1) for a in AGES_GPU]
    out: dict[str, dict[str, Any]] = {
        # what each mechanism adds, one at a time; `ideal-cache` never evicts (KV unbounded), so
        # the difference to the same policy with the real KV is cache retention, not ordering
        "decomposition": {
            "workload": "mixed",
            "variants": {
                "fcfs-nocache": ("fcfs-nocache", {}),
                "fcfs": ("fcfs", {}),
                "fcfs-ideal-cache": ("fcfs", {"kv_capacity_tokens": 10**10}),
                "fcfs-by-program": ("fcfs", {"within_level": "program"}),
                "plas-nopreempt": ("plas", {"preemptive": False}),
                "plas-nopreempt-ideal-cache": (
                    "plas",
                    {"preemptive": False, "kv_capacity_tokens": 10**10},
                ),
                "plas": ("plas", {}),
                "plas-free-preempt": ("plas", {"preemption": SWAP, "swap_s_per_token": 0.0}),
                "atlas": ("atlas", {}),
                "srpt": ("srpt", {}),
            },
        },
        "preemption": {
            "workload": "mixed",
            "variants": {
                "mlfq": ("mlfq", {}),
                "mlfq-minrun0": ("mlfq", {"min_run_tokens": 0}),
                "mlfq-swap": ("mlfq", {"preemption": SWAP}),
                "atlas": ("atlas", {}),
                "atlas-minrun0": ("atlas", {"min_run_tokens": 0}),
                "atlas-minrun64": ("atlas", {"min_run_tokens": 64}),
                "atlas-swap": ("atlas", {"preemption": SWAP}),
                "atlas-nopreempt": ("atlas", {"preemptive": False}),
                "plas": ("plas", {}),
                "plas-nopreempt": ("plas", {"preemptive": False}),
                # the per-iteration cap on priority preemptions (default 1): 4, and none
                "atlas-cap4": ("atlas", {"max_preemptions_per_step": 4}),
                "atlas-nocap": ("atlas", {"max_preemptions_per_step": 10**6}),
            },
        },
        "starvation": {
            "workload": "mixed",
            "variants": {
                "fcfs": ("fcfs", {}),
                "atlas": ("atlas", {}),
                "atlas-nostarv": ("atlas", {"beta": None}),
                "atlas-beta1": ("atlas", {"beta": 1.0}),
                **{f"atlas-age{a:g}": ("atlas", {"age_s": a}) for a in ages},
                "plas": ("plas", {}),
                f"plas-age{ages[1]:g}": ("plas", {"age_s": ages[1]}),
            },
        },
        "quanta": {
            "workload": "mixed",
            "variants": {
                "mlfq": ("mlfq", {}),
                "mlfq-q5x256x4": ("mlfq", {"quanta": (5, 256, 4)}),
                "mlfq-q13x16x2": ("mlfq", {"quanta": (13, 16, 2)}),
                "mlfq-continuous": ("mlfq", {"mlfq": MLFQConfig.continuous()}),
                "atlas": ("atlas", {}),
                "atlas-q5x256x4": ("atlas", {"quanta": (5, 256, 4)}),
                "atlas-q13x16x2": ("atlas", {"quanta": (13, 16, 2)}),
                "atlas-continuous": ("atlas", {"mlfq": MLFQConfig.continuous()}),
                "atlas-call-order": ("atlas", {"within_level": "call"}),
                "atlas-prefill-weight1": ("atlas", {"prefill_weight": 1.0}),
            },
        },
        "atlas": {
            "workload": "lats",
            "variants": {
                "fcfs": ("fcfs", {}),
                "mlfq": ("mlfq", {}),
                "plas": ("plas", {}),
                "atlas": ("atlas", {}),
                "atlas-exact": ("atlas-exact", {}),
                "plas-nopreempt": ("plas", {"preemptive": False}),
                "atlas-nopreempt": ("atlas", {"preemptive": False}),
                "srpt": ("srpt", {}),
            },
        },
    }
    # p99 tails where atlas's p99 latency per token exceeds fcfs's in the main sweeps (LATS at
    # 1-1.26x capacity, BFCL at 1.27x): does the age bound (beyond the paper) fix them, and at
    # what cost? Ages are 1.5x and 3x the workload's light-load p99 program latency.
    for wl in ("lats", "bfcl"):
        out[f"tails-{wl}"] = {
            "workload": wl,
            "factors": (0.8, 1.0, 1.25, 1.6),
            "age_multiples": (1.5, 3.0),
            "variants": {p: (p, {}) for p in ("fcfs", "plas", "atlas")},
        }
    # A KV cache that binds through running contexts, not only through cached prefixes: in every
    # other set KV exhaustion never preempts (kv_preemptions = 0), because 256 running contexts
    # fit in 400k tokens. A quarter of the KV (100k tokens, e.g. a longer-context deployment or
    # a smaller card) for every policy; capacity and rates follow the smaller KV.
    out["kv-bound"] = {
        "workload": "mixed",
        "sim_options": {"kv_capacity_tokens": 100_000},
        "variants": {p: (p, {}) for p in ("fcfs-nocache", "fcfs", "plas", "atlas", "srpt")},
    }
    # the main policies under bursty arrivals (gamma gaps, coefficient of variation 3)
    out["bursty"] = {
        "workload": "mixed",
        "arrival": "bursty",
        "variants": {p: (p, {}) for p in ("fcfs-nocache", "fcfs", "mlfq", "plas", "atlas", "srpt")},
    }
    # Load balancer choice over 1-8 engines. The workload grows with the engines (programs per
    # engine fixed, `--programs-per-engine`) and rates are the same multiples of each engine
    # count's capacity, so every engine count sees the same per-engine load and the same length
    # of steady state. `atlas-locality-noguard` drops the overload guard (guard_abs=None).
    for n in ENGINE_COUNTS:
        variants: dict[str, Variant] = {
            f"{pol}-{bal}": (pol, {"balancer": bal})
            for pol in ("fcfs", "atlas")
            for bal in ("round-robin", "least-loaded", "locality")
        }
        variants["atlas-locality-noguard"] = ("atlas", {"balancer": "locality", "guard_abs": None})
        out[f"balance-{n}"] = {
            "workload": "mixed",
            "engines": n,
            "per_engine": True,
            "factors": BALANCE_FACTORS,
            "variants": variants,
        }
    return out
