"""The `balancer` summary: the `balance-<n>` sets (one load balancer comparison per engine
count) combined into `balancer.json`, `balancer.simulated.md` and `balancer.simulated.png`, so
one table shows how each balancer scales from 1 to 8 engines.

Written only once every engine count has been run whole (not while a set is still partial).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from autellix.bench.ablations.sets import ENGINE_COUNTS
from autellix.bench.reporting import md_table_lines, pyplot, save_figure
from autellix.bench.sim_summary import MARK
from autellix.sim.report import BANNER


def _at(d: dict[str, Any], label: str, factor: float) -> dict[str, Any] | None:
    """The run of `label` at the swept rate nearest `factor` x capacity."""
    want = factor * d["capacity_programs_per_s"]
    runs = [r for r in d["runs"] if r["policy"] == label]
    return min(runs, key=lambda r: abs(r["rate"] - want)) if runs else None


def balancer_summary(out: Path) -> dict[str, Any] | None:
    """Combine the `balance-<n>` sets into `balancer.json`, `.simulated.md` and `.png` (only
    once every engine count has been run)."""
    sets_: dict[int, dict[str, Any]] = {}
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
    """Per engine count: each variant's sustainable rate as a fraction of that count's capacity
    (comparable across counts), then latency, cache hits and guard overrides at 1.25-2x."""
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
    ]
    rows = []
    for lab in labels:
        cells = []
        for n in ns:
            e = s["engines"][n]
            for m in ("5", "10"):
                x = e["variants"][lab]["sustainable"][m]
                cells.append(f"{MARK[x['bound']]}{x['rate'] / e['capacity_programs_per_s']:.2f}")
        rows.append([lab, *cells])
    out += md_table_lines(["variant", *(f"{n} eng m={m}" for n in ns for m in ("5", "10"))], rows)
    for f in ("1.25", "1.6", "2"):
        out += [
            "",
            f"## At {f}x capacity: avg s/token, p99 program latency s, cache hit rate, guard "
            "overrides",
            "",
        ]
        rows = []
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
            rows.append([lab, *cells])
        out += md_table_lines(["variant", *(f"{n} engine(s)" for n in ns)], rows)
    return "\n".join(out) + "\n"


def balancer_plot(sets_: dict[int, dict[str, Any]], labels: list[str], path: Path) -> None:
    """Per engine count (columns): latency per token and cache hit rate against rate/capacity."""
    plt = pyplot()
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
    save_figure(fig, path, dpi=100)
