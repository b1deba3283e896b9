"""Outputs of a simulated sweep: results.json, PNG plots, a Markdown table and the console view.

Every output says SIMULATED: these are numbers from the discrete-event model, not from engines.
Bounds print as `>=` (lower bound: the policy never crossed the SLO in the sweep) and `<=`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from autellix.bench.reporting import md_table as _md_table

BANNER = "SIMULATED"
_BOUND = {"exact": "", "lower": ">=", "upper": "<=", "unknown": "~"}


def fmt_rate(rate: float, bound: str) -> str:
    return f"{_BOUND.get(bound, '')}{rate:.3g}"


def fmt_ratio(ratio: float, bound: str) -> str:
    if not math.isfinite(ratio):
        return "inf"
    return f"{_BOUND.get(bound, '')}{ratio:.2f}x"


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, allow_nan=True) + "\n")


def sustainable_rows(
    payload: dict[str, Any], block: str = "sustainable"
) -> tuple[list[str], list[list[str]]]:
    """Header and rows: per policy and m (or fixed SLO, `block="sustainable_absolute"`), the
    sustainable rate and its ratio to each baseline."""
    sust = payload.get(block) or {}
    pols = list(sust.get("policies", {}))
    baselines = [b for b in ("fcfs-nocache", "fcfs", "mlfq", "srpt") if b in pols]
    first = "m" if block == "sustainable" else "SLO"
    header = [
        "policy",
        first,
        "L* (s/tok)",
        "rate (prog/s)",
        *[f"vs {b}" for b in baselines],
    ]
    rows = []
    for pol in pols:
        for m, e in sust["policies"][pol].items():
            ratios = [
                fmt_ratio(e["ratio_to"][b]["ratio"], e["ratio_to"][b]["bound"])
                if b in e["ratio_to"]
                else "-"
                for b in baselines
            ]
            slo = sust["slo_s_per_token"][m]
            rows.append([pol, m, f"{slo:.4g}", fmt_rate(e["rate"], e["bound"]), *ratios])
    return header, rows


def run_rows(payload: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one line per (rate, policy) with latency, tails and where time went."""
    header = [
        "rate",
        "policy",
        "avg s/tok",
        "p99 s/tok",
        "avg lat s",
        "p99 lat s",
        "wait %",
        "preempt",
        "cache hit",
        "util",
    ]
    rows = []
    for r in payload["runs"]:
        util = r["engine_utilization"]
        rows.append(
            [
                f"{r['rate']:.4g}",
                r["policy"],
                f"{r['avg_latency_per_token_s']:.4g}",
                f"{r['p99_latency_per_token_s']:.4g}",
                f"{r['avg_latency_s']:.4g}",
                f"{r['p99_latency_s']:.4g}",
                f"{100 * r.get('waiting_fraction', float('nan')):.0f}",
                str(r["preemptions"]),
                f"{r['cache_hit_rate']:.2f}",
                f"{sum(util) / max(1, len(util)):.2f}",
            ]
        )
    return header, rows


def markdown(payload: dict[str, Any]) -> str:
    """The Markdown report of one workload's sweep."""
    meta = payload["meta"]
    out = [
        f"# {BANNER} results: workload `{meta['workload']}`",
        "",
        f"{BANNER} with the discrete-event simulator (profile `{meta['profile']}`, "
        f"{meta['engines']} engine(s), balancer `{meta['balancer']}`, {meta['programs']} programs, "
        f"{meta['arrival']} arrivals, seed {meta['seed']}). Sources: "
        + ", ".join(f"{k}: {v}" for k, v in meta["sources"].items())
        + f". Token counts: {meta['tokens']}.",
        f"Estimated capacity: {payload['capacity_programs_per_s']:.4g} programs/s.",
        "",
        "## Throughput at equal latency (sustainable rate, programs/s)",
        "",
        "L* = m x the lowest average latency per token at the lightest rate; `>=` marks a lower "
        "bound (never crossed), `<=` an upper bound.",
        "",
        _md_table(*sustainable_rows(payload)),
    ]
    if payload.get("sustainable_absolute"):
        out += [
            "",
            "## Throughput at fixed SLOs (absolute s/token)",
            "",
            "The same crossing at fixed latencies per token, independent of the light-load "
            "latency (which batch growth alone multiplies several times before anything waits).",
            "",
            _md_table(*sustainable_rows(payload, "sustainable_absolute")),
        ]
    load = payload.get("at_load")
    if load:
        out += [
            "",
            f"## At {load['load']:.0%} of estimated capacity ({load['rate']:.4g} programs/s)",
            "",
        ]
        ratio = load.get("avg_latency_ratio_to_srpt", {})
        rows = [
            [
                p,
                f"{v:.4g}",
                f"{load['p99_latency_s'][p]:.4g}",
                f"{load['avg_latency_per_token_s'][p]:.4g}",
                f"{ratio[p]:.2f}x" if p in ratio else "-",
            ]
            for p, v in load["avg_latency_s"].items()
        ]
        out.append(
            _md_table(["policy", "avg lat s", "p99 lat s", "avg s/tok", "avg lat / srpt"], rows)
        )
    out += ["", "## All runs", "", _md_table(*run_rows(payload)), ""]
    return "\n".join(out)


def plot(payload: dict[str, Any], path: Path) -> None:
    """Average and p99 latency per token vs program arrival rate, one line per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    meta = payload["meta"]
    runs = payload["runs"]
    pols = list(dict.fromkeys(r["policy"] for r in runs))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), constrained_layout=True)
    for ax, key, label in (
        (axes[0], "avg_latency_per_token_s", "average latency per token (s)"),
        (axes[1], "p99_latency_per_token_s", "p99 latency per token (s)"),
    ):
        for pol in pols:
            pts = sorted((r["rate"], r[key]) for r in runs if r["policy"] == pol)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=pol)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("program arrival rate (programs/s)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    for m, slo in payload["sustainable"].get("slo_s_per_token", {}).items():
        axes[0].axhline(slo, color="grey", ls=":", lw=0.8)
        axes[0].annotate(f"L* m={m}", (axes[0].get_xlim()[0], slo), fontsize=7, va="bottom")
    axes[0].legend(fontsize=8)
    fig.suptitle(
        f"{BANNER} — workload {meta['workload']}, profile {meta['profile']}, "
        f"{meta['engines']} engine(s), {meta['programs']} programs"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(payload: dict[str, Any], out: Path) -> dict[str, Path]:
    """results.json, the PNG plot and the Markdown table for one workload; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    name = payload["meta"]["workload"]
    paths = {
        "json": out / "results.json",
        "png": out / f"latency_vs_rate_{name}.simulated.png",
        "md": out / f"results_{name}.simulated.md",
    }
    write_json(paths["json"], payload)
    plot(payload, paths["png"])
    paths["md"].write_text(markdown(payload))
    return paths


def rich_tables(payload: dict[str, Any]) -> list[Any]:
    """The sustainable-rate table and the per-run table, for printing with rich."""
    from rich.table import Table

    tables = []
    meta = payload["meta"]
    for title, (header, rows) in (
        (f"{BANNER}: throughput at equal latency — {meta['workload']}", sustainable_rows(payload)),
        (f"{BANNER}: runs — {meta['workload']}", run_rows(payload)),
    ):
        t = Table(title=title)
        for h in header:
            t.add_column(h, justify="right" if h not in ("policy",) else "left")
        for row in rows:
            t.add_row(*row)
        tables.append(t)
    return tables
