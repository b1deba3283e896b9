"""SIMULATED ablations of issue 4: where the gain comes from, preemption, anti-starvation and the
p99 bound, quanta, ATLAS vs PLAS, and load balancing over 1-8 engines.

    python bench/sim/ablations.py --profile gpu-a100-llama8b [--only decomposition,quanta]
    python bench/sim/ablations.py --profile cpu-tiny --only decomposition,preemption,starvation

Each *set* runs labelled policy variants (`SweepConfig.variants`) over one fixed list of rates
(multiples of the workload's estimated capacity, the same for every variant) and writes
`bench/sim/ablations/<profile>/<set>.json`, `<set>.simulated.md` and
`<set>.simulated.png`. Nothing here is tuned: every variant changes one policy knob of the
registry defaults, on the same workload, arrivals and engine profile as the main sweeps.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from autellix.policy import MLFQConfig, PreemptionCost, PreemptionMode
from autellix.sim import load_profile
from autellix.sim.metrics import ABSOLUTE_SLOS, sustainable, sustainable_absolute
from autellix.sim.report import BANNER
from autellix.sim.sweep import SweepConfig, analytic_capacity, run_sweep
from autellix.workloads import WorkloadOptions, load_workload

ROOT = Path(__file__).resolve().parent
FACTORS = (0.1, 0.5, 0.8, 1.0, 1.25, 1.6, 2.0, 3.2)  # x estimated capacity
SWAP = PreemptionCost(PreemptionMode.SWAP)
# Age bounds (beyond the paper) for the A100 profile; the cpu-tiny engine is ~10x slower on the
# same workload (capacity ratio), so its ages are scaled by that ratio (see `_age_scale`).
AGES_GPU = (300.0, 600.0, 1200.0)

Variant = tuple[str, dict[str, Any]]


def _age_scale(profile: str, programs: list) -> float:
    gpu = analytic_capacity(programs, load_profile("gpu-a100-llama8b"))
    return gpu / analytic_capacity(programs, load_profile(profile))


def sets(profile: str, programs_of: Any) -> dict[str, dict[str, Any]]:
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
    # the main policies under bursty arrivals (gamma gaps, coefficient of variation 3)
    out["bursty"] = {
        "workload": "mixed",
        "arrival": "bursty",
        "variants": {p: (p, {}) for p in ("fcfs-nocache", "fcfs", "mlfq", "plas", "atlas", "srpt")},
    }
    for n in (1, 2, 4, 8):
        out[f"balance-{n}"] = {
            "workload": "mixed",
            "engines": n,
            "variants": {
                f"{pol}-{bal}": (pol, {"balancer": bal})
                for pol in ("fcfs", "atlas")
                for bal in ("round-robin", "least-loaded", "locality")
            },
        }
    return out


def run_set(name: str, spec: dict[str, Any], profile: str, programs: list, jobs: int) -> dict:
    engines = spec.get("engines", 1)
    prof = load_profile(profile)
    cap = analytic_capacity(programs, prof, engines)
    rates = [float(f"{f * cap:.4g}") for f in FACTORS]
    labels = list(spec["variants"])
    cfg = SweepConfig(
        workload=spec["workload"],
        policies=labels,
        engines=engines,
        profile=profile,
        jobs=jobs,
        variants=spec["variants"],
        arrival=spec.get("arrival", "poisson"),
        burst_cv=3.0,
    )
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    res = run_sweep(programs, cfg, rates, extend=False, capacity=cap)
    wall = time.perf_counter() - t0
    base = [b for b in ("fcfs-nocache", "fcfs", "mlfq", "fcfs-round-robin") if b in labels]
    for ref in ("atlas", "plas", "atlas-locality"):
        if ref in labels and ref not in base:
            base.append(ref)
    return {
        "simulated": True,
        "banner": f"{BANNER} ablation (discrete-event model, not measured on engines)",
        "set": name,
        "meta": {
            "workload": spec["workload"],
            "programs": len(programs),
            "engines": engines,
            "profile": profile,
            "seed": 0,
            "arrival": cfg.arrival,
            "burst_cv": cfg.burst_cv if cfg.arrival == "bursty" else None,
            "variants": {k: [p, repr(o)] for k, (p, o) in spec["variants"].items()},
            "rate_factors": list(FACTORS),
            "load_average_start": list(load0),
            "load_average_end": list(os.getloadavg()),
            "wall_s": wall,
            "jobs": jobs,
            "command": " ".join(sys.argv),
        },
        "capacity_programs_per_s": cap,
        "rates": res.rates,
        "runs": res.runs,
        "sustainable": sustainable(res.runs, baselines=base),
        "sustainable_absolute": sustainable_absolute(res.runs, ABSOLUTE_SLOS, baselines=base),
    }


def _fmt_rate(e: dict[str, Any]) -> str:
    mark = {"exact": "", "lower": ">=", "upper": "<="}.get(e["bound"], "~")
    return f"{mark}{e['rate']:.3g}"


def markdown(d: dict[str, Any]) -> str:
    meta = d["meta"]
    sust, absu = d["sustainable"], d["sustainable_absolute"]
    labels = list(meta["variants"])
    ms = list(sust["slo_s_per_token"])
    slos = list(absu["slo_s_per_token"])
    levels = ", ".join(f"m={m}: {sust['slo_s_per_token'][m]:.3g}" for m in ms)
    out = [
        f"# {BANNER} ablation `{d['set']}`: workload `{meta['workload']}`, profile "
        f"`{meta['profile']}`, {meta['engines']} engine(s)",
        "",
        f"{meta['programs']} programs, {meta['arrival']} arrivals (seed 0), rates "
        + ", ".join(f"{r:.3g}" for r in d["rates"])
        + f" programs/s (x{', x'.join(f'{f:g}' for f in meta['rate_factors'])} of the estimated "
        f"capacity {d['capacity_programs_per_s']:.3g}/s). Machine load average "
        f"{meta['load_average_start'][0]:.1f} -> {meta['load_average_end'][0]:.1f} on 2 shared "
        f"cores; {meta['wall_s']:.0f} s wall.",
        "",
        "Variants: " + "; ".join(f"`{k}` = {p} {o}" for k, (p, o) in meta["variants"].items()),
        "",
        "## Sustainable rate (programs/s): L* = m x light-load latency per token "
        f"({levels} s/tok), and fixed SLOs",
        "",
        "| variant | "
        + " | ".join(f"m={m}" for m in ms)
        + " | "
        + " | ".join(f"{s} s/tok" for s in slos)
        + " |",
        "|---|" + "---|" * (len(ms) + len(slos)),
    ]
    for lab in labels:
        cells = [_fmt_rate(sust["policies"][lab][m]) for m in ms]
        cells += [_fmt_rate(absu["policies"][lab][s]) for s in slos]
        out.append(f"| {lab} | " + " | ".join(cells) + " |")
    out += [
        "",
        "## Per rate",
        "",
        "| rate | variant | avg s/tok | p99 s/tok | avg lat s | p99 lat s | max lat s | "
        "preempt | recomputed tok | cache hit |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in d["runs"]:
        st = r.get("stats", {})
        out.append(
            f"| {r['rate']:.3g} | {r['policy']} | {r['avg_latency_per_token_s']:.4g} | "
            f"{r['p99_latency_per_token_s']:.4g} | {r['avg_latency_s']:.4g} | "
            f"{r['p99_latency_s']:.4g} | {r['max_latency_s']:.4g} | {r['preemptions']} | "
            f"{st.get('recomputed_tokens', 0):.0f} | {r['cache_hit_rate']:.2f} |"
        )
    return "\n".join(out) + "\n"


def plot(d: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    meta = d["meta"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), constrained_layout=True)
    for ax, key, label in (
        (axes[0], "avg_latency_per_token_s", "average latency per token (s)"),
        (axes[1], "p99_latency_s", "p99 program latency (s)"),
    ):
        for lab in meta["variants"]:
            pts = sorted((r["rate"], r[key]) for r in d["runs"] if r["policy"] == lab)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=lab)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("program arrival rate (programs/s)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(
        f"{BANNER} ablation {d['set']} — {meta['workload']}, {meta['profile']}, "
        f"{meta['engines']} engine(s), {meta['programs']} programs"
    )
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="gpu-a100-llama8b")
    ap.add_argument("--programs", type=int, default=1000)
    ap.add_argument("--only", default="", help="comma-separated set names (default: all)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    out = a.out or ROOT / "ablations" / a.profile
    out.mkdir(parents=True, exist_ok=True)
    kv = load_profile(a.profile).kv_capacity_tokens
    opts = WorkloadOptions(max_context_tokens=min(8192, kv))
    cache: dict[str, list] = {}

    def programs_of(wl: str) -> list:
        if wl not in cache:
            cache[wl] = load_workload(wl, a.programs, 0, options=opts).programs
        return cache[wl]

    todo = sets(a.profile, programs_of)
    names = [n for n in a.only.split(",") if n] or list(todo)
    for name in names:
        spec = todo[name]
        d = run_set(name, spec, a.profile, programs_of(spec["workload"]), a.jobs)
        (out / f"{name}.json").write_text(json.dumps(d, indent=1, allow_nan=True) + "\n")
        (out / f"{name}.simulated.md").write_text(markdown(d))
        plot(d, out / f"{name}.simulated.png")
        print(f"{BANNER}: {a.profile} {name}: {d['meta']['wall_s']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
