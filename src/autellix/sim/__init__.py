"""Discrete-event simulator of program-aware scheduling. Results are SIMULATED and say so.

Public API (used by `autellix sim`, the benchmarks and tests):
    simulate(programs, *, policy="atlas", engines=1, profile="cpu-tiny", balancer="locality",
             seed=0, **options) -> SimRun
    list_policies(), load_profile(name_or_path), list_profiles()

`options` may be:
- any `PolicyConfig` field (e.g. `starvation=StarvationConfig(beta=None)`, `mlfq=MLFQConfig(...)`,
  `max_preemptions_per_step=2`, `prefix_caching=False`, `preemption=PreemptionCost(...)`), plus
  the shortcuts `beta`, `age_s`, `slowdown`, `slowdown_floor_s` (the tail guard),
  `quanta=(levels, first_quantum, growth)`, `prefill_weight`;
- any `EngineProfile` field (e.g. `max_num_seqs=64`, `kv_capacity_tokens=200_000`);
- any `BalancerConfig` field except `kind` (e.g. `guard_abs=None`);
- `max_jump_steps` (cap on decode iterations per jump; fidelity knob, default unbounded),
  `kv_watermark` (fraction of KV kept free at admission, default 0.01 as in vLLM) and
  `record_calls=True` (fill `SimRun.call_records` with per-call `CallRecord`s).
"""

from __future__ import annotations

import dataclasses
import gc
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autellix.policy.balance import BalancerConfig, BalancerKind
from autellix.policy.mlfq import MLFQConfig
from autellix.policy.priority import ServiceUnits
from autellix.policy.registry import PolicyConfig, get_policy
from autellix.policy.registry import list_policies as _list_policies
from autellix.sim.profile import EngineProfile, list_profiles, load_profile
from autellix.sim.results import ProgramOutcome, SimRun

if TYPE_CHECKING:
    from autellix.workloads.types import ProgramSpec

__all__ = [
    "EngineProfile",
    "ProgramOutcome",
    "SimRun",
    "list_policies",
    "list_profiles",
    "load_profile",
    "simulate",
]

_POLICY_FIELDS = {f.name for f in dataclasses.fields(PolicyConfig)} - {"name", "priority"}
_PROFILE_FIELDS = {f.name for f in dataclasses.fields(EngineProfile)} - {"name"}
_BALANCER_FIELDS = {f.name for f in dataclasses.fields(BalancerConfig)} - {"kind"}
_SIM_FIELDS = {
    "max_jump_steps",
    "kv_watermark",
    "record_calls",
    "hints",
    "classes",
    "tenants",
    "tenant_weights",
}


def _simulator() -> Any:
    """The `Simulator` class, imported on first use: the simulated engine backend imports
    `autellix.sim.profile` (this package first), and a restarted engine should not pay for the
    whole simulator and its workloads (numpy) before serving again."""
    from autellix.sim.core import Simulator

    return Simulator


def list_policies() -> list[str]:
    """Names accepted by `simulate(policy=...)`."""
    return _list_policies()


def build_policy(policy: str | PolicyConfig, options: dict[str, Any]) -> PolicyConfig:
    """The policy config after applying the policy-related `options` (consumed from the dict)."""
    cfg = policy if isinstance(policy, PolicyConfig) else get_policy(policy)
    changes: dict[str, Any] = {k: options.pop(k) for k in list(options) if k in _POLICY_FIELDS}
    starv = changes.get("starvation", cfg.starvation)
    shortcuts = ("beta", "age_s", "slowdown", "slowdown_floor_s")
    if any(k in options for k in shortcuts):
        starv = dataclasses.replace(starv, **{k: options.pop(k) for k in shortcuts if k in options})
        changes["starvation"] = starv
    if "quanta" in options:
        levels, q, g = options.pop("quanta")
        changes["mlfq"] = MLFQConfig.geometric(levels, q, g)
    if "prefill_weight" in options:
        changes["units"] = ServiceUnits(prefill_weight=options.pop("prefill_weight"))
    return cfg.replace(**changes) if changes else cfg


def simulate(
    programs: Sequence[ProgramSpec],
    *,
    policy: str | PolicyConfig = "atlas",
    engines: int = 1,
    profile: str | Path | EngineProfile = "cpu-tiny",
    balancer: str = "locality",
    seed: int = 0,
    **options: Any,
) -> SimRun:
    """Run one SIMULATED experiment: `programs` served by `engines` engines under `policy`.

    Deterministic: the same inputs give the same result (`seed` is recorded; the model itself has
    no randomness — arrival processes belong to the workload generators).
    """
    opts = dict(options)
    cfg = build_policy(policy, opts)
    prof = load_profile(profile)
    prof_changes = {k: opts.pop(k) for k in list(opts) if k in _PROFILE_FIELDS}
    if prof_changes:
        prof = prof.replace(**prof_changes)
    bal = BalancerConfig(
        kind=BalancerKind(balancer),
        **{k: opts.pop(k) for k in list(opts) if k in _BALANCER_FIELDS},
    )
    sim_opts = {k: opts.pop(k) for k in list(opts) if k in _SIM_FIELDS}
    if opts:
        raise TypeError(f"unknown simulate() options: {', '.join(sorted(opts))}")
    # The run allocates ~10 objects per call and frees nothing until the end: cyclic GC passes
    # would only rescan them (25% of the run time), so pause GC for the duration.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        run = _simulator()(
            programs, cfg, prof, engines=engines, balancer=bal, seed=seed, **sim_opts
        ).run()
    finally:
        if was_enabled:
            gc.enable()
    run.stats["seed"] = float(seed)
    run.stats["engines"] = float(engines)
    return run
