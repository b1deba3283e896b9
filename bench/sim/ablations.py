"""SIMULATED ablations of issue 4: where the gain comes from, preemption, anti-starvation and the
p99 bound, quanta, ATLAS vs PLAS, and load balancing over 1-8 engines.

    python bench/sim/ablations.py --profile gpu-a100-llama8b [--only decomposition,quanta]
    python bench/sim/ablations.py --profile cpu-tiny --only decomposition,preemption,starvation
    python bench/sim/ablations.py --only balancer   # balance-1,2,4,8, then balancer.* summary
    python bench/sim/ablations.py --only balance-8 --variants fcfs-round-robin,...  # in parts

Each *set* runs labelled policy variants (`SweepConfig.variants`) over one fixed list of rates
(multiples of the workload's estimated capacity, the same for every variant) and writes
`bench/sim/ablations/<profile>/<set>.json`, `<set>.simulated.md` and
`<set>.simulated.png` (the `balance-<n>` sets also `balancer.*`, combined over engine
counts). Nothing here is tuned: every variant changes one policy knob of the
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
from autellix.sim import load_profile, simulate
from autellix.sim.metrics import (
    ABSOLUTE_SLOS,
    outcome_metrics,
    sustainable,
    sustainable_absolute,
)
from autellix.sim.report import BANNER
from autellix.sim.sweep import SweepConfig, analytic_capacity, run_sweep
from autellix.workloads import WorkloadOptions, load_workload
from autellix.workloads.arrivals import with_arrivals

ROOT = Path(__file__).resolve().parent
FACTORS = (0.1, 0.5, 0.8, 1.0, 1.25, 1.6, 2.0, 3.2)  # x estimated capacity
SWAP = PreemptionCost(PreemptionMode.SWAP)
# Age bounds (beyond the paper) for the A100 profile; the cpu-tiny engine is ~10x slower on the
# same workload (capacity ratio), so its ages are scaled by that ratio (see `_age_scale`).
AGES_GPU = (300.0, 600.0, 1200.0)
# Balancer sets: 3.2x is left out (the 8-engine set has 8x the programs of the 1-engine one)
BALANCE_FACTORS = (0.1, 0.5, 0.8, 1.0, 1.25, 1.6, 2.0)
ENGINE_COUNTS = (1, 2, 4, 8)

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
        variants: dict[str, tuple[str, dict[str, Any]]] = {
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


def light_p99(programs: list, profile: str, cap: float) -> float:
    """p99 program latency (s) under fcfs at 10% of capacity: the workload's own tail when
    nothing waits, the time scale for the age bounds of the `tails-*` sets."""
    run = simulate(with_arrivals(programs, 0.1 * cap, 0), policy="fcfs", profile=profile)
    return outcome_metrics(run.programs)["p99_latency_s"]


def run_set(
    name: str,
    spec: dict[str, Any],
    profile: str,
    programs: list,
    jobs: int,
    only: list[str] | None = None,
    previous: dict[str, Any] | None = None,
) -> dict:
    """Run one set. `only`: run just these variants and take the others' runs from `previous`
    (the same set's earlier JSON, same programs and rates), so a long set can be run in parts."""
    engines = spec.get("engines", 1)
    prof = load_profile(profile)
    common = dict(spec.get("sim_options", {}))  # profile changes for every variant of the set
    if common:
        prof = prof.replace(**common)
    cap = analytic_capacity(programs, prof, engines)
    light = None
    if "age_multiples" in spec:
        # age bounds as multiples of the workload's light-load p99 program latency
        light = light_p99(programs, profile, cap)
        spec = dict(spec, variants=dict(spec["variants"]))
        for k in spec["age_multiples"]:
            age = float(f"{k * light:.3g}")
            spec["variants"][f"atlas-age{age:g}"] = ("atlas", {"age_s": age})
    factors = spec.get("factors", FACTORS)
    rates = [float(f"{f * cap:.4g}") for f in factors]
    labels = list(spec["variants"])
    todo = [lab for lab in labels if not only or lab in only]
    kept: list[dict[str, Any]] = []
    wall0, commands = 0.0, []
    if only and previous is None:
        # first part of a split set: a JSON of just these variants
        labels = todo
        spec = dict(spec, variants={k: spec["variants"][k] for k in todo})
    elif only and previous is not None:
        # complete the set: run the named variants and any the earlier JSON lacks
        have = {r["policy"] for r in previous["runs"]}
        todo = [lab for lab in labels if lab in only or lab not in have]
        meta0 = previous["meta"]
        if meta0["programs"] != len(programs) or previous["rates"] != rates:
            raise SystemExit(f"{name}: earlier JSON has other programs or rates; run it whole")
        kept = [r for r in previous["runs"] if r["policy"] in labels and r["policy"] not in todo]
        wall0, commands = meta0["wall_s"], [meta0["command"]]
    cfg = SweepConfig(
        workload=spec["workload"],
        policies=todo,
        engines=engines,
        profile=profile,
        jobs=jobs,
        variants=spec["variants"],
        arrival=spec.get("arrival", "poisson"),
        burst_cv=3.0,
        sim_options=common,
    )
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    res = run_sweep(programs, cfg, rates, extend=False, capacity=cap)
    wall = time.perf_counter() - t0 + wall0
    runs = sorted(kept + res.runs, key=lambda r: (r["rate"], labels.index(r["policy"])))
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
            "sim_options": {k: repr(v) for k, v in common.items()},
            "rate_factors": list(factors),
            "light_load_p99_latency_s": light,
            "load_average_start": list(load0),
            "load_average_end": list(os.getloadavg()),
            "wall_s": wall,
            "jobs": jobs,
            "command": " && ".join([*commands, " ".join(sys.argv)]),
        },
        "capacity_programs_per_s": cap,
        "rates": res.rates,
        "runs": runs,
        "sustainable": sustainable(runs, baselines=base),
        "sustainable_absolute": sustainable_absolute(runs, ABSOLUTE_SLOS, baselines=base),
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


def _at(d: dict[str, Any], label: str, factor: float) -> dict[str, Any] | None:
    """The run of `label` at the swept rate nearest `factor` x capacity."""
    want = factor * d["capacity_programs_per_s"]
    runs = [r for r in d["runs"] if r["policy"] == label]
    return min(runs, key=lambda r: abs(r["rate"] - want)) if runs else None


def balancer_summary(out: Path) -> dict[str, Any] | None:
    """Combine the `balance-<n>` sets into `balancer.json`, `.simulated.md` and `.png` (only
    once every engine count has been run)."""
    sets_ = {}
    for n in ENGINE_COUNTS:
        f = out / f"balance-{n}.json"
        if not f.exists():
            return None
        sets_[n] = json.loads(f.read_text())
    labels = list(sets_[ENGINE_COUNTS[0]]["meta"]["variants"])
    if any(list(d["meta"]["variants"]) != labels for d in sets_.values()):
        return None  # a set is still partial (run in parts with --variants)
    probe = (1.0, 1.25, 1.6, 2.0)
    rows: dict[str, Any] = {}
    for n, d in sets_.items():
        per: dict[str, Any] = {}
        for lab in labels:
            sus = d["sustainable"]["policies"][lab]
            at = {}
            for f in probe:
                r = _at(d, lab, f)
                if r is None:
                    continue
                at[f"{f:g}"] = {
                    "rate": r["rate"],
                    "avg_latency_per_token_s": r["avg_latency_per_token_s"],
                    "p99_latency_per_token_s": r["p99_latency_per_token_s"],
                    "avg_latency_s": r["avg_latency_s"],
                    "p99_latency_s": r["p99_latency_s"],
                    "cache_hit_rate": r["cache_hit_rate"],
                    "engine_utilization_min": min(r["engine_utilization"]),
                    "engine_utilization_max": max(r["engine_utilization"]),
                    "guard_overrides": r["stats"].get("guard_overrides", 0.0),
                    "preemptions": r["preemptions"],
                }
            per[lab] = {"sustainable": {m: sus[m] for m in sus}, "at_capacity_factor": at}
        rows[str(n)] = {
            "programs": d["meta"]["programs"],
            "capacity_programs_per_s": d["capacity_programs_per_s"],
            "rates": d["rates"],
            "wall_s": d["meta"]["wall_s"],
            "variants": per,
        }
    summary = {
        "simulated": True,
        "banner": f"{BANNER} ablation (discrete-event model, not measured on engines)",
        "set": "balancer",
        "profile": sets_[ENGINE_COUNTS[0]]["meta"]["profile"],
        "workload": "mixed",
        "sources": [f"balance-{n}.json" for n in ENGINE_COUNTS],
        "engines": rows,
    }
    (out / "balancer.json").write_text(json.dumps(summary, indent=1, allow_nan=True) + "\n")
    (out / "balancer.simulated.md").write_text(balancer_markdown(summary, labels))
    balancer_plot(sets_, labels, out / "balancer.simulated.png")
    return summary


def balancer_markdown(s: dict[str, Any], labels: list[str]) -> str:
    ns = list(s["engines"])
    out = [
        f"# {BANNER} ablation `balancer`: workload `mixed`, profile `{s['profile']}`, "
        f"{', '.join(ns)} engines",
        "",
        "Per engine count: "
        + "; ".join(
            f"{n} engine(s): {e['programs']} programs, capacity {e['capacity_programs_per_s']:.3g}"
            f"/s, {e['wall_s']:.0f} s wall"
            for n, e in s["engines"].items()
        )
        + ". Rates are the same multiples of each count's capacity (full tables in "
        + ", ".join(f"`{x.replace('.json', '.simulated.md')}`" for x in s["sources"])
        + "). With one engine every balancer sends every call to it (identical by construction).",
        "",
        "## Sustainable rate / capacity (L* = m x light-load latency per token)",
        "",
        "| variant | " + " | ".join(f"{n} eng m=5 | {n} eng m=10" for n in ns) + " |",
        "|---|" + "---|" * (2 * len(ns)),
    ]
    for lab in labels:
        cells = []
        for n in ns:
            e = s["engines"][n]
            for m in ("5", "10"):
                x = e["variants"][lab]["sustainable"][m]
                mark = {"exact": "", "lower": ">=", "upper": "<="}.get(x["bound"], "~")
                cells.append(f"{mark}{x['rate'] / e['capacity_programs_per_s']:.2f}")
        out.append(f"| {lab} | " + " | ".join(cells) + " |")
    for f in ("1.25", "1.6", "2"):
        out += [
            "",
            f"## At {f}x capacity: avg s/token, p99 program latency s, cache hit rate, guard "
            "overrides",
            "",
            "| variant | " + " | ".join(f"{n} engine(s)" for n in ns) + " |",
            "|---|" + "---|" * len(ns),
        ]
        for lab in labels:
            cells = []
            for n in ns:
                a = s["engines"][n]["variants"][lab]["at_capacity_factor"].get(f)
                cells.append(
                    "-"
                    if a is None
                    else f"{a['avg_latency_per_token_s']:.4f} / {a['p99_latency_s']:.0f} / "
                    f"{a['cache_hit_rate']:.2f} / {a['guard_overrides']:.0f}"
                )
            out.append(f"| {lab} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def balancer_plot(sets_: dict[int, dict[str, Any]], labels: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(sets_), figsize=(4 * len(sets_), 7.5), constrained_layout=True)
    for j, (n, d) in enumerate(sets_.items()):
        cap = d["capacity_programs_per_s"]
        for i, (key, ylab) in enumerate(
            (
                ("avg_latency_per_token_s", "avg latency per token (s)"),
                ("cache_hit_rate", "prefix-cache hit rate"),
            )
        ):
            ax = axes[i][j]
            for lab in labels:
                pts = sorted((r["rate"] / cap, r[key]) for r in d["runs"] if r["policy"] == lab)
                style = "--" if lab.startswith("fcfs") else "-"
                xs, ys = [p[0] for p in pts], [p[1] for p in pts]
                ax.plot(xs, ys, style, marker="o", ms=3, label=lab)
            ax.set_xscale("log")
            if i == 0:
                ax.set_yscale("log")
                ax.set_title(f"{n} engine(s), {d['meta']['programs']} programs")
            ax.set_xlabel("arrival rate / capacity")
            ax.set_ylabel(ylab)
            ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{BANNER} ablation balancer — mixed, {d['meta']['profile']}")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="gpu-a100-llama8b")
    ap.add_argument("--programs", type=int, default=1000)
    ap.add_argument("--only", default="", help="comma-separated set names (default: all)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument(
        "--variants",
        default="",
        help="run only these variants of the set; the others' runs come from its existing JSON "
        "(to split a long set into runs of under ~10 minutes)",
    )
    ap.add_argument(
        "--programs-per-engine",
        type=int,
        default=500,
        help="balance-<n> sets: programs = this x engines (same per-engine load and length)",
    )
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    out = a.out or ROOT / "ablations" / a.profile
    out.mkdir(parents=True, exist_ok=True)
    kv = load_profile(a.profile).kv_capacity_tokens
    opts = WorkloadOptions(max_context_tokens=min(8192, kv))
    cache: dict[tuple[str, int], list] = {}

    def programs_of(wl: str, n: int | None = None) -> list:
        n = n or a.programs
        if (wl, n) not in cache:
            cache[(wl, n)] = load_workload(wl, n, 0, options=opts).programs
        return cache[(wl, n)]

    todo = sets(a.profile, programs_of)
    names: list[str] = []
    for n in [n for n in a.only.split(",") if n] or list(todo):
        # `balancer` = every balance-<n> set, then their combined summary
        names += [f"balance-{e}" for e in ENGINE_COUNTS] if n == "balancer" else [n]
    for name in names:
        if name == "balancer-summary":
            continue
        spec = todo[name]
        count = a.programs_per_engine * spec["engines"] if spec.get("per_engine") else None
        only = [v for v in a.variants.split(",") if v] or None
        prev = out / f"{name}.json"
        d = run_set(
            name,
            spec,
            a.profile,
            programs_of(spec["workload"], count),
            a.jobs,
            only=only,
            previous=json.loads(prev.read_text()) if only and prev.exists() else None,
        )
        (out / f"{name}.json").write_text(json.dumps(d, indent=1, allow_nan=True) + "\n")
        (out / f"{name}.simulated.md").write_text(markdown(d))
        plot(d, out / f"{name}.simulated.png")
        print(f"{BANNER}: {a.profile} {name}: {d['meta']['wall_s']:.0f} s", flush=True)
    if any(n.startswith("balance") for n in names) and balancer_summary(out):
        print(f"{BANNER}: {a.profile} balancer summary written", flush=True)


if __name__ == "__main__":
    main()
