"""Markdown summaries of the SIMULATED sweeps (`autellix bench sim-summary`), read from the
committed results so that `bench/sim/summary.md` and the README quote numbers without retyping
them.

Results are `<root>/<workload>/results.json` (the A100 profile) and
`<root>/<profile>/<workload>/results.json` (other profiles), grouped by the profile and workload
their `meta` names. Two views:

- `summary_markdown`: per profile, the paper's targets with what was simulated; per workload the
  sustainable rate of every policy at m = 2, 5, 10 (L* = m x light-load latency per token) and
  at fixed SLOs in s/token, each with its ratio to the baselines; latency at 80% of the
  estimated capacity against the srpt oracle; the tails (p99 latency per token and p99 program
  latency of atlas against fcfs at every rate); where time went at about twice the capacity.
- `tables_markdown` (`--tables`): condensed tables for bench/README.md: the targets side by
  side for every profile, each policy's ratio to fcfs, and one table per ablation set.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from autellix.bench.reporting import md_table_lines
from autellix.sim.report import fmt_ratio

BASELINES = ("fcfs-nocache", "fcfs", "mlfq")
# (workload, m, policy, baseline, at least): the paper's targets
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
# how a bound prints before a number: >= a lower bound (never crossed in the sweep), <= an upper
MARK = {"exact": "", "lower": ">=", "upper": "<=", "unknown": "~"}
ORDER = ("mixed", "sharegpt", "bfcl", "lats")
POLS = ("mlfq", "plas", "atlas", "srpt")  # the columns of the condensed ratio tables

Ratio = tuple[float, str]  # (ratio, bound)


def ratio(sust: dict[str, Any], pol: str, base: str, m: str) -> Ratio | None:
    """pol's sustainable rate at level m over base's, with the bound that the two bounds allow
    (exact / lower / unknown); None where either is missing."""
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


def _fmt(x: Ratio | None) -> str:
    return "-" if x is None else fmt_ratio(*x)


def _r(x: Ratio | None) -> str:
    """A ratio without the trailing x (a column whose header says what it is over)."""
    return "-" if x is None else f"{MARK[x[1]]}{x[0]:.2f}"


def _by_order(names: Any) -> list[str]:
    return sorted(names, key=lambda n: ORDER.index(n) if n in ORDER else 9)


def _rate_table(sust: dict[str, Any], first: str) -> list[str]:
    rows = []
    for pol, levels in sust["policies"].items():
        for m, e in levels.items():
            cells = [_fmt(ratio(sust, pol, b, m)) if b != pol else "-" for b in BASELINES]
            rows.append([pol, m, f"{MARK[e['bound']]}{e['rate']:.3g}", *cells])
    header = ["policy", first, "sustainable rate", *(f"vs {b}" for b in BASELINES)]
    return md_table_lines(header, rows)


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
    """One workload's section of the summary (see the module docstring)."""
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
    to_srpt = load.get("avg_latency_ratio_to_srpt", {})
    if to_srpt:
        out += [
            "",
            f"At 80% of estimated capacity ({load['rate']:.3g}/s), average program latency / srpt: "
            + ", ".join(f"{p} {v:.2f}x" for p, v in to_srpt.items()),
        ]
    out += ["", tails(d)]
    cap = d["capacity_programs_per_s"]
    rate = min(d["rates"], key=lambda r: abs(r - 2 * cap))
    rows = []
    for r in d["runs"]:
        if r["rate"] == rate:
            st = r.get("stats", {})
            rows.append(
                [
                    r["policy"],
                    f"{r['avg_latency_per_token_s']:.4g}",
                    f"{r['p99_latency_per_token_s']:.4g}",
                    f"{r['avg_latency_s']:.4g}",
                    f"{r['p99_latency_s']:.4g}",
                    f"{100 * r['waiting_fraction']:.0f}",
                    str(r["preemptions"]),
                    f"{st.get('recomputed_tokens', 0):.3g}",
                    f"{st.get('decoded_tokens', 0):.3g}",
                    f"{st.get('evicted_tokens', 0):.3g}",
                    f"{r['cache_hit_rate']:.2f}",
                ]
            )
    header = ["policy", "avg s/tok", "p99 s/tok", "avg lat s", "p99 lat s", "wait %"]
    header += ["preemptions", "recomputed tok", "decoded tok", "evicted tok", "cache hit"]
    out += [
        "",
        f"Where time went at {rate:.3g}/s (swept rate nearest 2x the estimated capacity):",
        "",
        *md_table_lines(header, rows),
    ]
    return [*out, ""]


def targets_table(results: dict[str, dict[str, Any]]) -> list[str]:
    """One profile's targets: what was simulated and whether it meets each."""
    rows = []
    for wl, m, pol, base, want in TARGETS:
        d = results.get(wl)
        got = ratio(d["sustainable"], pol, base, m) if d else None
        met = "?" if got is None else ("yes" if got[0] >= want else "no")
        if got is not None and got[1] == "lower" and got[0] < want:
            met = "open (lower bound)"
        rows.append([wl, m, base, f">= {want:g}x", _fmt(got), met])
    return md_table_lines(["workload", "m", "atlas vs", "target", "SIMULATED", "met"], rows)


def load_results(root: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """profile -> workload -> results.json payload, for the sweeps laid out as the module says:
    a results.json elsewhere (an ablation set, a study in a folder of its own such as
    `gittins/<name>/`, a study whose payload has no sweep `meta` such as `fairness/`) is not one
    of these sweeps and would replace one of them."""
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for p in sorted([*root.glob("*/results.json"), *root.glob("*/*/results.json")]):
        d = json.loads(p.read_text())
        meta = d.get("meta")
        if not isinstance(meta, dict) or "workload" not in meta or "profile" not in meta:
            continue
        place = p.parent.relative_to(root).parts
        if place[-1] != meta["workload"] or (len(place) == 2 and place[0] != meta["profile"]):
            continue
        found.setdefault(meta["profile"], {})[meta["workload"]] = d
    return found


def summary_markdown(root: Path) -> str:
    """bench/sim/summary.md: every profile's targets, then a section per workload."""
    lines = ["# SIMULATED results of issue 4 (generated by autellix bench sim-summary)", ""]
    for profile, results in load_results(root).items():
        lines += [f"## Profile `{profile}`: issue 4 targets (SIMULATED)", ""]
        lines += [*targets_table(results), ""]
        for name in _by_order(results):
            lines += workload_section(name, results[name])
    return "\n".join(lines)


def targets_by_profile(results: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """The targets with one column per profile."""
    profiles = list(results)
    rows = []
    for wl, m, pol, base, want in TARGETS:
        cells = []
        for p in profiles:
            d = results[p].get(wl)
            got = ratio(d["sustainable"], pol, base, m) if d else None
            ok = got is not None and got[0] >= want
            cells.append("-" if got is None else f"{_r(got)}x {'(met)' if ok else ''}".strip())
        rows.append([wl, m, base, f">= {want:g}x", *cells])
    header = ["workload", "m", "atlas vs", "target", *(f"`{p}`" for p in profiles)]
    return md_table_lines(header, rows)


def headline(results: dict[str, dict[str, Any]], block: str, keys: list[str]) -> list[str]:
    """Per workload and level: each policy's sustainable-rate ratio to fcfs (and fcfs-nocache)."""
    rows = []
    for wl in _by_order(results):
        sust = results[wl].get(block)
        if not sust:
            continue
        for k in keys:
            if k not in sust["policies"].get("fcfs", {}):
                continue
            f = sust["policies"]["fcfs"][k]
            cells = [_r(ratio(sust, p, "fcfs", k)) for p in POLS]
            nc = _r(ratio(sust, "atlas", "fcfs-nocache", k))
            lvl = f"m={k}" if block == "sustainable" else f"{k} s/tok"
            rows.append([wl, lvl, f"{MARK[f['bound']]}{f['rate']:.3g}", *cells, nc])
    header = ["workload", "level", "fcfs rate", *(f"{p} / fcfs" for p in POLS)]
    return md_table_lines([*header, "atlas / fcfs-nocache"], rows)


def ablation(path: Path, factors: tuple[float, ...] = ()) -> list[str]:
    """One ablation set: sustainable rate at m=5, m=10 and the loosest-but-one fixed SLO, then
    average latency per token, p99 program latency and recomputed tokens at the swept rates
    nearest the given capacity factors."""
    d = json.loads(path.read_text())
    sust, absu = d["sustainable"], d["sustainable_absolute"]
    cap = d["capacity_programs_per_s"]
    rates = [min(d["rates"], key=lambda r, f=f: abs(r - f * cap)) for f in factors]
    slo = list(absu["slo_s_per_token"])[1]
    head = ["variant", "m=5", "m=10", f"{slo} s/tok"]
    for r in rates:
        head += [f"avg s/tok @{r:.3g}", f"p99 lat s @{r:.3g}", f"recomp. tok @{r:.3g}"]
    by = {(r["policy"], r["rate"]): r for r in d["runs"]}
    rows = []
    for lab in d["meta"]["variants"]:
        if lab not in sust["policies"]:
            continue
        entries = (
            sust["policies"][lab]["5"],
            sust["policies"][lab]["10"],
            absu["policies"][lab][slo],
        )
        cells = [f"{MARK[e['bound']]}{e['rate']:.3g}" for e in entries]
        for r in rates:
            x = by[(lab, r)]
            cells += [
                f"{x['avg_latency_per_token_s']:.3g}",
                f"{x['p99_latency_s']:.4g}",
                f"{x['stats'].get('recomputed_tokens', 0):.3g}",
            ]
        rows.append([lab, *cells])
    return md_table_lines(head, rows)


def tables_markdown(root: Path) -> str:
    """The condensed tables: targets per profile, ratios at m and at fixed SLOs, ablations."""
    res = load_results(root)
    parts = ["## targets\n", "\n".join(targets_by_profile(res))]
    for prof, results in res.items():
        parts += [f"\n## {prof}: ratios at m\n"]
        parts += ["\n".join(headline(results, "sustainable", ["2", "5", "10"]))]
        parts += [f"\n## {prof}: ratios at fixed SLOs\n"]
        slos = ["0.05", "0.1", "0.2", "0.5"]
        parts += ["\n".join(headline(results, "sustainable_absolute", slos))]
    for prof_dir in sorted((root / "ablations").glob("*")):
        for f in sorted(prof_dir.glob("*.json")):
            if "sustainable" not in json.loads(f.read_text()):
                continue  # a summary over other sets (balancer.json), not a sweep of its own
            parts += [f"\n## ablation {prof_dir.name} {f.stem}\n"]
            parts += ["\n".join(ablation(f, factors=(1.6, 3.2)))]
    return "\n".join(parts)
