"""Summarise the SIMULATED sweeps under bench/sim/<workload>/results.json into Markdown tables.

    python bench/sim/summarize.py [bench/sim] > bench/sim/summary.md

Prints, per workload: the sustainable rate of every policy at m = 2, 5, 10 with its ratio to
each baseline (issue 4's "throughput at equal latency"), the issue's targets with what was
measured, latency at 80% of the estimated capacity against the srpt oracle, and where time went
(waiting vs executing, preemptions, cache hits) at the rate nearest the atlas m=5 crossing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

BASELINES = ("fcfs-nocache", "fcfs", "mlfq")
# (workload, m, policy, baseline, at least): issue 4's targets
TARGETS = [
    ("mixed", "5", "atlas", "fcfs-nocache", 8.0),
    ("mixed", "5", "atlas", "fcfs", 4.0),
    ("mixed", "5", "atlas", "mlfq", 4.0),
    ("sharegpt", "10", "atlas", "fcfs", 2.0),
    ("bfcl", "10", "atlas", "fcfs", 2.0),
    ("lats", "10", "atlas", "fcfs", 2.0),
    ("lats", "10", "atlas", "mlfq", 2.5),
    ("lats", "10", "atlas", "plas", 1.0),
]
MARK = {"exact": "", "lower": ">=", "upper": "<=", "unknown": "~"}


def _ratio(sust: dict[str, Any], pol: str, base: str, m: str) -> tuple[float, str] | None:
    e = sust["policies"].get(pol, {}).get(m)
    if e is None:
        return None
    if base in e["ratio_to"]:
        r = e["ratio_to"][base]
        return r["ratio"], r["bound"]
    b = sust["policies"].get(base, {}).get(m)
    if b is None or b["rate"] <= 0:
        return None
    bound = "exact" if e["bound"] == b["bound"] == "exact" else "unknown"
    return e["rate"] / b["rate"], bound


def _fmt(x: tuple[float, str] | None) -> str:
    return "-" if x is None else f"{MARK[x[1]]}{x[0]:.2f}x"


def workload_section(name: str, d: dict[str, Any]) -> list[str]:
    sust = d["sustainable"]
    meta = d["meta"]
    out = [
        f"### {name} (SIMULATED)",
        "",
        f"{meta['programs']} programs, profile `{meta['profile']}`, {meta['engines']} engine(s), "
        f"sources: " + ", ".join(f"{k}: {v}" for k, v in meta["sources"].items()) + "; "
        f"estimated capacity {d['capacity_programs_per_s']:.3g} programs/s; "
        f"{len(d['rates'])} rates {min(d['rates']):.3g}-{max(d['rates']):.3g}/s.",
        "",
        "| policy | m | sustainable rate | " + " | ".join(f"vs {b}" for b in BASELINES) + " |",
        "|---|---|---|" + "---|" * len(BASELINES),
    ]
    for pol, levels in sust["policies"].items():
        for m, e in levels.items():
            cells = [_fmt(_ratio(sust, pol, b, m)) if b != pol else "-" for b in BASELINES]
            rate = f"{MARK[e['bound']]}{e['rate']:.3g}"
            out.append(f"| {pol} | {m} | {rate} | " + " | ".join(cells) + " |")
    load = d.get("at_load") or {}
    ratio = load.get("avg_latency_ratio_to_srpt", {})
    if ratio:
        out += [
            "",
            f"At 80% of estimated capacity ({load['rate']:.3g}/s), average program latency / srpt: "
            + ", ".join(f"{p} {v:.2f}x" for p, v in ratio.items()),
        ]
    # where the time went, near atlas's m=5 crossing
    target = sust["policies"].get("atlas", {}).get("5", {}).get("rate")
    if target:
        rate = min(d["rates"], key=lambda r: abs(r - target))
        out += [
            "",
            f"Where time went at {rate:.3g}/s (nearest swept rate to atlas's m=5 crossing):",
            "",
            "| policy | avg s/tok | p99 s/tok | avg lat s | p99 lat s | wait % | preemptions "
            "| cache hit |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in d["runs"]:
            if r["rate"] == rate:
                out.append(
                    f"| {r['policy']} | {r['avg_latency_per_token_s']:.4g} | "
                    f"{r['p99_latency_per_token_s']:.4g} | {r['avg_latency_s']:.4g} | "
                    f"{r['p99_latency_s']:.4g} | {100 * r['waiting_fraction']:.0f} | "
                    f"{r['preemptions']} | {r['cache_hit_rate']:.2f} |"
                )
    return [*out, ""]


def targets_table(results: dict[str, dict[str, Any]]) -> list[str]:
    out = [
        "| workload | m | atlas vs | target | SIMULATED | met |",
        "|---|---|---|---|---|---|",
    ]
    for wl, m, pol, base, want in TARGETS:
        d = results.get(wl)
        got = _ratio(d["sustainable"], pol, base, m) if d else None
        met = "?" if got is None else ("yes" if got[0] >= want else "no")
        if got is not None and got[1] == "lower" and got[0] < want:
            met = "open (lower bound)"
        out.append(f"| {wl} | {m} | {base} | >= {want:g}x | {_fmt(got)} | {met} |")
    return out


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/sim")
    results = {
        p.parent.name: json.loads(p.read_text()) for p in sorted(root.glob("*/results.json"))
    }
    lines = ["## SIMULATED: issue 4 targets", "", *targets_table(results), ""]
    for name, d in results.items():
        lines += workload_section(name, d)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
