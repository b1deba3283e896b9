"""Summarise the SIMULATED sweeps (bench/sim/<workload>/ for the A100 profile, bench/sim/cpu-tiny/
<workload>/ for the measured CPU profile) into Markdown tables.

    python bench/sim/summarize.py [bench/sim] > bench/sim/summary.md

Per profile: issue 4's targets with what was measured; per workload the sustainable rate of every
policy at m = 2, 5, 10 (L* = m x light-load latency per token, the issue's definition) and at
fixed SLOs in s/token, each with its ratio to the baselines; latency at 80% of the estimated
capacity against the srpt oracle; the tails (p99 latency per token and p99 program latency of
atlas against fcfs at every rate); and where time went at about twice the capacity.
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
ORDER = ("mixed", "sharegpt", "bfcl", "lats")


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
    if e["bound"] == b["bound"] == "exact":
        bound = "exact"
    elif e["bound"] in ("exact", "lower") and b["bound"] in ("exact", "upper"):
        bound = "lower"
    else:
        bound = "unknown"
    return e["rate"] / b["rate"], bound


def _fmt(x: tuple[float, str] | None) -> str:
    return "-" if x is None else f"{MARK[x[1]]}{x[0]:.2f}x"


def _rate_table(sust: dict[str, Any], first: str) -> list[str]:
    out = [
        f"| policy | {first} | sustainable rate | " + " | ".join(f"vs {b}" for b in BASELINES),
        "|---|---|---|" + "---|" * len(BASELINES),
    ]
    out[0] += " |"
    for pol, levels in sust["policies"].items():
        for m, e in levels.items():
            cells = [_fmt(_ratio(sust, pol, b, m)) if b != pol else "-" for b in BASELINES]
            rate = f"{MARK[e['bound']]}{e['rate']:.3g}"
            out.append(f"| {pol} | {m} | {rate} | " + " | ".join(cells) + " |")
    return out


def tails(d: dict[str, Any], pol: str = "atlas", base: str = "fcfs") -> str:
    """Worst ratio over swept rates of pol's p99 latency per token / p99 program latency to base."""
    by: dict[tuple[str, float], dict[str, Any]] = {(r["policy"], r["rate"]): r for r in d["runs"]}
    worst_lpt = (0.0, 0.0)
    worst_lat = (0.0, 0.0)
    for (p, rate), r in by.items():
        if p != pol or (base, rate) not in by:
            continue
        b = by[(base, rate)]
        x = r["p99_latency_per_token_s"] / b["p99_latency_per_token_s"]
        y = r["p99_latency_s"] / b["p99_latency_s"]
        worst_lpt = max(worst_lpt, (x, rate))
        worst_lat = max(worst_lat, (y, rate))
    return (
        f"Tails, {pol} / {base} over all swept rates: p99 latency per token at most "
        f"{worst_lpt[0]:.2f}x (at {worst_lpt[1]:.3g}/s); p99 program latency at most "
        f"{worst_lat[0]:.2f}x (at {worst_lat[1]:.3g}/s)."
    )


def workload_section(name: str, d: dict[str, Any]) -> list[str]:
    sust = d["sustainable"]
    meta = d["meta"]
    lw = meta.get("load_average_start")
    out = [
        f"### {name} — `{meta['profile']}` (SIMULATED)",
        "",
        f"{meta['programs']} programs, {meta['engines']} engine(s), sources: "
        + ", ".join(f"{k}: {v}" for k, v in meta["sources"].items())
        + f"; estimated capacity {d['capacity_programs_per_s']:.3g} programs/s; "
        f"{len(d['rates'])} rates {min(d['rates']):.3g}-{max(d['rates']):.3g}/s; "
        f"L* = {', '.join(f'{v:.3g}' for v in sust['slo_s_per_token'].values())} s/token "
        f"for m = {', '.join(sust['slo_s_per_token'])}"
        + (f"; load average {lw[0]:.1f} at start" if lw else "")
        + ".",
        "",
        *_rate_table(sust, "m"),
    ]
    absu = d.get("sustainable_absolute")
    if absu:
        out += ["", "At fixed SLOs (s/token):", "", *_rate_table(absu, "SLO")]
    load = d.get("at_load") or {}
    ratio = load.get("avg_latency_ratio_to_srpt", {})
    if ratio:
        out += [
            "",
            f"At 80% of estimated capacity ({load['rate']:.3g}/s), average program latency / srpt: "
            + ", ".join(f"{p} {v:.2f}x" for p, v in ratio.items()),
        ]
    out += ["", tails(d)]
    cap = d["capacity_programs_per_s"]
    rate = min(d["rates"], key=lambda r: abs(r - 2 * cap))
    out += [
        "",
        f"Where time went at {rate:.3g}/s (swept rate nearest 2x the estimated capacity):",
        "",
        "| policy | avg s/tok | p99 s/tok | avg lat s | p99 lat s | wait % | preemptions "
        "| recomputed tok | decoded tok | evicted tok | cache hit |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in d["runs"]:
        if r["rate"] == rate:
            st = r.get("stats", {})
            out.append(
                f"| {r['policy']} | {r['avg_latency_per_token_s']:.4g} | "
                f"{r['p99_latency_per_token_s']:.4g} | {r['avg_latency_s']:.4g} | "
                f"{r['p99_latency_s']:.4g} | {100 * r['waiting_fraction']:.0f} | "
                f"{r['preemptions']} | {st.get('recomputed_tokens', 0):.3g} | "
                f"{st.get('decoded_tokens', 0):.3g} | {st.get('evicted_tokens', 0):.3g} | "
                f"{r['cache_hit_rate']:.2f} |"
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


def load_results(root: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """profile -> workload -> results.json payload."""
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for p in sorted([*root.glob("*/results.json"), *root.glob("*/*/results.json")]):
        if "ablations" in p.parts:
            continue
        d = json.loads(p.read_text())
        meta = d["meta"]
        found.setdefault(meta["profile"], {})[meta["workload"]] = d
    return found


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/sim")
    lines = ["# SIMULATED results of issue 4 (generated by bench/sim/summarize.py)", ""]
    for profile, results in load_results(root).items():
        lines += [f"## Profile `{profile}`: issue 4 targets (SIMULATED)", ""]
        lines += [*targets_table(results), ""]
        for name in sorted(results, key=lambda n: ORDER.index(n) if n in ORDER else 9):
            lines += workload_section(name, results[name])
    print("\n".join(lines))


if __name__ == "__main__":
    main()
