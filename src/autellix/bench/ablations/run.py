"""`autellix bench ablations` without its command line: the named sets run one after the
other, each written as `<set>.json`, `<set>.simulated.md` and `<set>.simulated.png`, then the
balancer summary once every `balance-<n>` set is complete.

Programs are generated once per (workload, count) and shared by every set that asks for them,
so two sets on `mixed` compare the very same programs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from autellix.bench.ablations.balancer import balancer_summary
from autellix.bench.ablations.report import markdown, plot
from autellix.bench.ablations.sets import ENGINE_COUNTS, sets
from autellix.bench.ablations.sweep import run_set
from autellix.sim import load_profile
from autellix.sim.report import BANNER
from autellix.workloads import WorkloadOptions, load_workload
from autellix.workloads.types import ProgramSpec


@dataclass(frozen=True)
class AblationConfig:
    """What to run: the profile, program counts, the sets (`only`, empty for all; `balancer`
    stands for every `balance-<n>`), the variants of a set run in parts, and where to write."""

    out: Path
    profile: str = "gpu-a100-llama8b"
    programs: int = 1000
    only: tuple[str, ...] = ()
    variants: tuple[str, ...] = ()
    jobs: int = 2
    programs_per_engine: int = 500


def set_names(only: tuple[str, ...], known: list[str]) -> list[str]:
    """The sets to run, in order: `only` with `balancer` expanded (all of `known` when empty).
    Raises ValueError for a name that is no set, before anything runs."""
    names: list[str] = []
    for n in only or known:
        names += [f"balance-{e}" for e in ENGINE_COUNTS] if n == "balancer" else [n]
    unknown = [n for n in names if n not in known and n != "balancer-summary"]
    if unknown:
        raise ValueError(f"unknown set(s) {', '.join(unknown)}; sets: {', '.join(known)}, balancer")
    return names


def run_ablations(cfg: AblationConfig, echo: Callable[[str], None] = print) -> list[Path]:
    """Run the configured sets and write their files; returns the paths written."""
    cfg.out.mkdir(parents=True, exist_ok=True)
    kv = load_profile(cfg.profile).kv_capacity_tokens
    opts = WorkloadOptions(max_context_tokens=min(8192, kv))
    cache: dict[tuple[str, int], list[ProgramSpec]] = {}

    def programs_of(wl: str, n: int | None = None) -> list[ProgramSpec]:
        n = n or cfg.programs
        if (wl, n) not in cache:
            cache[(wl, n)] = load_workload(wl, n, 0, options=opts).programs
        return cache[(wl, n)]

    todo = sets(cfg.profile, programs_of)
    names = set_names(cfg.only, list(todo))
    written: list[Path] = []
    for name in names:
        if name == "balancer-summary":
            continue
        spec = todo[name]
        count = cfg.programs_per_engine * spec["engines"] if spec.get("per_engine") else None
        prev = cfg.out / f"{name}.json"
        d = run_set(
            name,
            spec,
            cfg.profile,
            programs_of(spec["workload"], count),
            cfg.jobs,
            only=list(cfg.variants) or None,
            previous=json.loads(prev.read_text()) if cfg.variants and prev.exists() else None,
        )
        paths = [cfg.out / f"{name}{ext}" for ext in (".json", ".simulated.md", ".simulated.png")]
        paths[0].write_text(json.dumps(d, indent=1, allow_nan=True) + "\n")
        paths[1].write_text(markdown(d))
        plot(d, paths[2])
        written += paths
        echo(f"{BANNER}: {cfg.profile} {name}: {d['meta']['wall_s']:.0f} s")
    if any(n.startswith("balance") for n in names) and balancer_summary(cfg.out):
        written += [
            cfg.out / f"balancer{ext}" for ext in (".json", ".simulated.md", ".simulated.png")
        ]
        echo(f"{BANNER}: {cfg.profile} balancer summary written")
    return written
