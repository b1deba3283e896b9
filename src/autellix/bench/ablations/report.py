"""One ablation set's Markdown (`<set>.simulated.md`) and plot (`<set>.simulated.png`), read
from its results payload only, so a committed JSON can be re-rendered without re-running it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autellix.bench.reporting import md_table_lines, pyplot, rate_axes, save_figure
from autellix.sim.report import BANNER, fmt_rate


def markdown(d: dict[str, Any]) -> str:
    """The set's header (workload, rates, load, wall time), its variants, the sustainable rate of
    each variant at every level m and fixed SLO, and one row per (rate, variant)."""
    meta = d["meta"]
    sust, absu = d["sustainable"], d["sustainable_absolute"]
    labels = list(meta["variants"])
    ms = list(sust["slo_s_per_token"])
    slos = list(absu["slo_s_per_token"])
    levels = ", ".join(f"m={m}: {sust['slo_s_per_token'][m]:.3g}" for m in ms)
    rate_rows = []
    for lab in labels:
        entries = [sust["policies"][lab][m] for m in ms]
        entries += [absu["policies"][lab][s] for s in slos]
        rate_rows.append([lab, *(fmt_rate(e["rate"], e["bound"]) for e in entries)])
    run_rows = [
        [
            f"{r['rate']:.3g}",
            r["policy"],
            f"{r['avg_latency_per_token_s']:.4g}",
            f"{r['p99_latency_per_token_s']:.4g}",
            f"{r['avg_latency_s']:.4g}",
            f"{r['p99_latency_s']:.4g}",
            f"{r['max_latency_s']:.4g}",
            str(r["preemptions"]),
            f"{r.get('stats', {}).get('recomputed_tokens', 0):.0f}",
            f"{r['cache_hit_rate']:.2f}",
        ]
        for r in d["runs"]
    ]
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
        *md_table_lines(
            ["variant", *(f"m={m}" for m in ms), *(f"{s} s/tok" for s in slos)], rate_rows
        ),
        "",
        "## Per rate",
        "",
        *md_table_lines(
            [
                "rate",
                "variant",
                "avg s/tok",
                "p99 s/tok",
                "avg lat s",
                "p99 lat s",
                "max lat s",
                "preempt",
                "recomputed tok",
                "cache hit",
            ],
            run_rows,
        ),
    ]
    return "\n".join(out) + "\n"


def plot(d: dict[str, Any], path: Path) -> None:
    """Average latency per token and p99 program latency against the arrival rate, one line per
    variant, both axes logarithmic."""
    plt = pyplot()
    meta = d["meta"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), constrained_layout=True)
    for ax, key, label in (
        (axes[0], "avg_latency_per_token_s", "average latency per token (s)"),
        (axes[1], "p99_latency_s", "p99 program latency (s)"),
    ):
        for lab in meta["variants"]:
            pts = sorted((r["rate"], r[key]) for r in d["runs"] if r["policy"] == lab)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=lab)
        rate_axes(ax, label)
    axes[0].legend(fontsize=7)
    fig.suptitle(
        f"{BANNER} ablation {d['set']} — {meta['workload']}, {meta['profile']}, "
        f"{meta['engines']} engine(s), {meta['programs']} programs"
    )
    save_figure(fig, path, dpi=100)
