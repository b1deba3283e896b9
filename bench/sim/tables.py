"""Condensed Markdown tables of the SIMULATED results for bench/README.md (read from the JSON files,
so the README quotes numbers without retyping them).

    python bench/sim/tables.py [bench/sim] > /tmp/tables.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from summarize import MARK, ORDER, TARGETS, _ratio, load_results

POLS = ("mlfq", "plas", "atlas", "srpt")


def _r(x: tuple[float, str] | None) -> str:
    return "-" if x is None else f"{MARK[x[1]]}{x[0]:.2f}"


def targets(results: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    profiles = list(results)
    out = [
        "| workload | m | atlas vs | target | " + " | ".join(f"`{p}`" for p in profiles) + " |",
        "|---|---|---|---|" + "---|" * len(profiles),
    ]
    for wl, m, pol, base, want in TARGETS:
        cells = []
        for p in profiles:
            d = results[p].get(wl)
            got = _ratio(d["sustainable"], pol, base, m) if d else None
            ok = got is not None and got[0] >= want
            cells.append("-" if got is None else f"{_r(got)}x {'(met)' if ok else ''}".strip())
        out.append(f"| {wl} | {m} | {base} | >= {want:g}x | " + " | ".join(cells) + " |")
    return out


def headline(results: dict[str, dict[str, Any]], block: str, keys: list[str]) -> list[str]:
    """Per workload and level: each policy's sustainable-rate ratio to fcfs (and fcfs-nocache)."""
    out = [
        "| workload | level | fcfs rate | "
        + " | ".join(f"{p} / fcfs" for p in POLS)
        + " | atlas / fcfs-nocache |",
        "|---|---|---|" + "---|" * (len(POLS) + 1),
    ]
    for wl in sorted(results, key=lambda n: ORDER.index(n) if n in ORDER else 9):
        sust = results[wl].get(block)
        if not sust:
            continue
        for k in keys:
            if k not in sust["policies"].get("fcfs", {}):
                continue
            f = sust["policies"]["fcfs"][k]
            cells = [_r(_ratio(sust, p, "fcfs", k)) for p in POLS]
            nc = _r(_ratio(sust, "atlas", "fcfs-nocache", k))
            lvl = f"m={k}" if block == "sustainable" else f"{k} s/tok"
            out.append(
                f"| {wl} | {lvl} | {MARK[f['bound']]}{f['rate']:.3g} | "
                + " | ".join(cells)
                + f" | {nc} |"
            )
    return out


def ablation(path: Path, rows: list[str] | None = None, factors: tuple[float, ...] = ()) -> list:
    """One ablation set: sustainable rate at m=5, m=10 and the loosest-but-one fixed SLO, then
    average / p99 latency per token and p99 program latency at the given capacity factors."""
    d = json.loads(path.read_text())
    sust, absu = d["sustainable"], d["sustainable_absolute"]
    labels = rows or list(d["meta"]["variants"])
    cap = d["capacity_programs_per_s"]
    rates = [min(d["rates"], key=lambda r, f=f: abs(r - f * cap)) for f in factors]
    slo = list(absu["slo_s_per_token"])[1]
    head = ["variant", "m=5", "m=10", f"{slo} s/tok"]
    for r in rates:
        head += [f"avg s/tok @{r:.3g}", f"p99 lat s @{r:.3g}", f"recomp. tok @{r:.3g}"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    by = {(r["policy"], r["rate"]): r for r in d["runs"]}
    for lab in labels:
        if lab not in sust["policies"]:
            continue
        cells = [
            f"{MARK[e['bound']]}{e['rate']:.3g}"
            for e in (sust["policies"][lab]["5"], sust["policies"][lab]["10"])
        ]
        e = absu["policies"][lab][slo]
        cells.append(f"{MARK[e['bound']]}{e['rate']:.3g}")
        for r in rates:
            x = by[(lab, r)]
            cells += [
                f"{x['avg_latency_per_token_s']:.3g}",
                f"{x['p99_latency_s']:.4g}",
                f"{x['stats'].get('recomputed_tokens', 0):.3g}",
            ]
        out.append(f"| {lab} | " + " | ".join(cells) + " |")
    return out


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/sim")
    res = load_results(root)
    print("## targets\n")
    print("\n".join(targets(res)))
    for prof, results in res.items():
        print(f"\n## {prof}: ratios at m\n")
        print("\n".join(headline(results, "sustainable", ["2", "5", "10"])))
        print(f"\n## {prof}: ratios at fixed SLOs\n")
        print("\n".join(headline(results, "sustainable_absolute", ["0.05", "0.1", "0.2", "0.5"])))
    for prof_dir in sorted((root / "ablations").glob("*")):
        for f in sorted(prof_dir.glob("*.json")):
            if "sustainable" not in json.loads(f.read_text()):
                continue  # a summary over other sets (balancer.json), not a sweep of its own
            print(f"\n## ablation {prof_dir.name} {f.stem}\n")
            print("\n".join(ablation(f, factors=(1.6, 3.2))))


if __name__ == "__main__":
    main()
