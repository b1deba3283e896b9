"""Outputs of `autellix bench live`: results.json, PNG plots, a Markdown report, console tables.

Same `results.json` shape as `autellix sim` (`runs`, `sustainable`, `meta`, ...), produced with
the simulator's own metric and table code (`autellix.sim.metrics`, `autellix.sim.report`), and
labelled for what it is: a LIVE stack (real frontend, schedulers, NATS, Postgres) in front of
SIMULATED engines.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from autellix.bench import callpath
from autellix.bench.reporting import (
    fmt,
    fmt_x,
    md_table,
    pyplot,
    rate_axes,
    rich_table,
    save_figure,
    write_report_files,
)
from autellix.sim.report import fmt_ratio, run_rows, sustainable_rows

BANNER = "LIVE stack + SIMULATED engines"


def _load_range(r: dict[str, Any]) -> str:
    return f"{r.get('load_avg_start', float('nan')):.1f}-{r.get('load_avg_end', float('nan')):.1f}"


def agreement_rows(payload: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Per run: live vs simulated average/p99 latency and where the time went."""
    header = [
        "rate",
        "policy",
        "live avg s",
        "sim avg s",
        "live/sim",
        "sim_cal avg s",
        "live/sim_cal",
        "live p99 s",
        "sim p99 s",
        "live wait s",
        "sim wait s",
        "live exec s",
        "sim exec s",
        "load",
    ]
    rows = []
    for r in payload["runs"]:
        rows.append(
            [
                fmt(r["rate"]),
                r["policy"] + ("" if r.get("policy_applied", True) else " (NOT applied)"),
                fmt(r["avg_latency_s"]),
                fmt(r.get("sim_avg_latency_s")),
                fmt(r.get("live_over_sim_avg_latency"), ".2f"),
                fmt(r.get("sim_cal_avg_latency_s")),
                fmt(r.get("live_over_sim_cal_avg_latency"), ".2f"),
                fmt(r["p99_latency_s"]),
                fmt(r.get("sim_p99_latency_s")),
                fmt(r.get("avg_waiting_s")),
                fmt(r.get("sim_avg_waiting_s")),
                fmt(r.get("avg_executing_s")),
                fmt(r.get("sim_avg_executing_s")),
                _load_range(r),
            ]
        )
    return header, rows


#: the gap table's columns after rate and policy: (header, results key, format)
GAP_COLUMNS = (
    ("live/sim", "live_over_sim_avg_latency", ".2f"),
    ("live/sim_cal", "live_over_sim_cal_avg_latency", ".2f"),
    ("live/sim_explained", "live_over_sim_explained_avg_latency", ".2f"),
    ("prefill x", "sim_explained_prefill_scale", ".2f"),
    ("uncached prompt tok live", "uncached_prompt_tokens", ".0f"),
    ("sim", "sim_uncached_prompt_tokens", ".0f"),
    ("cache hit live", "cache_hit_rate", ".3f"),
    ("sim", "sim_cache_hit_rate", ".3f"),
    ("occupancy live", "batch_occupancy", ".2f"),
    ("sim", "sim_batch_occupancy", ".2f"),
)


def gap_rows(payload: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Per run: how much of the live/sim gap each modelled effect explains."""
    header = ["rate", "policy", *(h for h, _, _ in GAP_COLUMNS)]
    rows = [
        [fmt(r["rate"]), r["policy"], *(fmt(r.get(key), spec) for _, key, spec in GAP_COLUMNS)]
        for r in payload["runs"]
    ]
    return header, rows


def ratio_rows(payload: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Per rate: baseline/policy ratios (policy vs baseline comparison)."""
    cmp_ = payload.get("comparison") or {}
    header = [
        "rate",
        f"{cmp_.get('baseline', 'fcfs')} saturated",
        "avg s/tok",
        "p99 s/tok",
        "avg latency",
        "p99 latency",
        "throughput",
        "simulated: avg s/tok",
        "avg latency",
        "p99 latency",
    ]
    rows = []
    for x in cmp_.get("per_rate", []):
        rows.append(
            [
                fmt(x["rate"]),
                ("yes" if x["baseline_saturated"] else "no")
                + (
                    f" ({x['baseline_latency_per_token_growth']:.1f}x)"
                    if x.get("baseline_latency_per_token_growth")
                    else ""
                ),
                f"{x['avg_latency_per_token_ratio']:.2f}x",
                f"{x['p99_latency_per_token_ratio']:.2f}x",
                f"{x['avg_latency_ratio']:.2f}x",
                f"{x['p99_latency_ratio']:.2f}x",
                f"{x['throughput_ratio']:.2f}x",
                fmt_x(x.get("sim_avg_latency_per_token_ratio")),
                fmt_x(x.get("sim_avg_latency_ratio")),
                fmt_x(x.get("sim_p99_latency_ratio")),
            ]
        )
    return header, rows


def markdown(payload: dict[str, Any]) -> str:
    """The Markdown report of one live benchmark."""
    meta = payload["meta"]
    eng = meta["engine"]
    probe = payload.get("probe") or {}
    out = [
        f"# {BANNER}: workload `{meta['workload']}`",
        "",
        f"{BANNER}: real frontend, {meta['schedulers']} scheduler replica(s), NATS and Postgres; "
        f"{meta['engines']} SIMULATED engine(s) (`sim` backend: {eng['step_s'] * 1000:.2f} ms "
        f"per step + {eng['step_per_seq_s'] * 1000:.3f} ms per sequence + "
        f"{eng['prefill_per_token_s'] * 1000:.3f} ms per uncached prompt token, batch "
        f"{eng['max_batch']}; {eng['source']}). {meta['programs']} programs, {meta['arrival']} "
        f"arrivals, seed {meta['seed']}. Sources: "
        + ", ".join(f"{k}: {v}" for k, v in meta["sources"].items())
        + ".",
        "",
        f"Machine: {meta.get('machine', '?')}; load average {meta['load_avg_start']:.2f} at "
        f"start, {meta['load_avg_end']:.2f} at the end (per run in the tables below).",
        f"Command: `{meta.get('command', '')}`",
        "",
        f"Capacity: {payload['capacity_programs_per_s']:.4g} programs/s "
        f"({meta.get('capacity_model', '')}).",
    ]
    if probe:
        out += [
            "",
            f"Probe: control plane adds {probe['per_call_overhead_s'] * 1000:.1f} ms per call "
            f"(1-token call p50 {probe['per_call_latency_p50_s'] * 1000:.1f} ms); a full batch "
            f"steps in {probe['step_measured_s'] * 1000:.2f} ms vs "
            f"{probe['step_configured_s'] * 1000:.2f} ms configured "
            f"(x{probe['step_scale']:.3f}).",
        ]
    cpus = meta.get("cpus") or os.cpu_count() or 1
    contended = [
        r
        for r in payload["runs"]
        if r.get("cpu_contended", max(r.get("load_avg_start", 0), r.get("load_avg_end", 0)) > cpus)
    ]
    if contended:
        out += [
            "",
            f"**CPU contention**: in {len(contended)}/{len(payload['runs'])} runs the load average "
            "exceeded the number of CPUs (other work shared the machine); engine steps and "
            "control-plane hops stretch under contention (see `sim_cal`), so compare policies "
            "within a rate (runs are interleaved per rate) rather than across benchmarks.",
        ]
    not_applied = sorted({r["policy"] for r in payload["runs"] if not r.get("policy_applied")})
    if not_applied:
        out += [
            "",
            f"**Warning**: the scheduler did not accept a policy flag, so {', '.join(not_applied)} "
            "ran with its built-in FCFS (`policy_applied: false`).",
        ]
    cmp_ = payload.get("comparison")
    if cmp_:
        h = cmp_["headline"]
        out += [
            "",
            f"## {cmp_['policy']} vs {cmp_['baseline']}",
            "",
            f"At {h['rate']:.4g} programs/s ({cmp_['baseline']} "
            + ("saturated" if h["baseline_saturated"] else "NOT saturated")
            + f"): average latency per token {h['avg_latency_per_token_ratio']:.2f}x lower, "
            f"average program latency {h['avg_latency_ratio']:.2f}x, p99 program latency "
            f"{h['p99_latency_ratio']:.2f}x ({cmp_['baseline']} / {cmp_['policy']}; > 1 means "
            f"{cmp_['policy']} is better).",
            "",
            md_table(*ratio_rows(payload)),
        ]
        eq = cmp_.get("throughput_at_equal_latency") or {}
        if eq:
            out += [
                "",
                "Throughput at equal latency (sustainable-rate ratio "
                f"{cmp_['policy']}/{cmp_['baseline']}): "
                + ", ".join(
                    f"m={m}: {fmt_ratio(v['ratio'], v['bound'])}" for m, v in sorted(eq.items())
                )
                + f" ({len(payload.get('rates', []))} rates: coarse; `>=`/`<=` mark bounds).",
            ]
    others = {k: v for k, v in (payload.get("comparisons") or {}).items() if v}
    if len(others) > 1:
        rows = []
        for pol, c in others.items():
            for x in c["per_rate"]:
                if not x["baseline_saturated"]:
                    continue
                rows.append(
                    [
                        pol,
                        fmt(x["rate"]),
                        f"{x['avg_latency_per_token_ratio']:.2f}x",
                        f"{x['avg_latency_ratio']:.2f}x",
                        f"{x['p99_latency_ratio']:.2f}x",
                        fmt_x(x.get("sim_avg_latency_per_token_ratio")),
                    ]
                )
        if rows:
            base = next(iter(others.values()))["baseline"]
            out += [
                "",
                f"### Every policy vs {base} where {base} is saturated ({base} / policy)",
                "",
                md_table(
                    ["policy", "rate", "avg s/tok", "avg latency", "p99 latency", "sim avg s/tok"],
                    rows,
                ),
            ]
    agree = payload.get("live_vs_sim") or {}
    if agree.get("runs"):
        out += [
            "",
            "## Live vs simulated (same programs, arrivals, policy; engine profile from the sim "
            "engine's flags)",
            "",
            f"Average program latency within {agree['tolerance']:.0%}: "
            f"{agree['within_tolerance']}/{agree['total']} runs "
            f"(mean |live/sim - 1| = {agree['mean_abs_error']:.1%}, max "
            f"{agree['max_abs_error']:.1%}). `sim_cal` adds the probe's measured step slowdown "
            "and per-call control-plane delay.",
            "",
            md_table(*agreement_rows(payload)),
            "",
            "Where the gap comes from: `sim_cal` = engine steps stretched by the probe's measured "
            "slowdown + the measured control-plane delay on every call; `sim_explained` = "
            "`sim_cal` with the prefill cost scaled (`prefill x`) so the simulated engines "
            "prefill as many prompt tokens as the live ones did (a diagnostic fitted to the run, "
            "not a prediction). Occupancy = mean calls running while an engine is busy.",
            "",
            md_table(*gap_rows(payload)),
        ]
    out += [
        "",
        "## Throughput at equal latency (sustainable rate, programs/s)",
        "",
        "L* = m x the lowest average latency per token at the lightest rate; `>=` marks a lower "
        "bound (never crossed), `<=` an upper bound.",
        "",
        md_table(*sustainable_rows(payload)),
        "",
        "## All runs",
        "",
        md_table(*run_rows(payload)),
        "",
    ]
    if any(r.get("call_path") for r in payload["runs"]):
        out += [
            "## Where a call's time goes (ms per call, mean / p90)",
            "",
            callpath.TABLE_NOTE,
            "",
            md_table(*callpath.table_rows(payload["runs"])),
            "",
        ]
    return "\n".join(out)


def plot(payload: dict[str, Any], path: Path) -> None:
    """Latency per token and average program latency vs rate: live (solid) and simulated
    prediction (dashed) per policy."""
    plt = pyplot()
    meta = payload["meta"]
    runs = payload["runs"]
    pols = list(dict.fromkeys(r["policy"] for r in runs))
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8), constrained_layout=True)
    panels = (
        (axes[0], "avg_latency_per_token_s", "average latency per token (s)"),
        (axes[1], "p99_latency_per_token_s", "p99 latency per token (s)"),
        (axes[2], "avg_latency_s", "average program latency (s)"),
    )
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, key, label in panels:
        for i, pol in enumerate(pols):
            c = colors[i % len(colors)]
            pts = sorted((r["rate"], r[key]) for r in runs if r["policy"] == pol)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color=c, label=pol)
            sim = sorted(
                (r["rate"], r[f"sim_{key}"])
                for r in runs
                if r["policy"] == pol and r.get(f"sim_{key}")
            )
            if sim:
                ax.plot(
                    [p[0] for p in sim],
                    [p[1] for p in sim],
                    ls="--",
                    marker="x",
                    color=c,
                    alpha=0.7,
                    label=f"{pol} (simulated)",
                )
        rate_axes(ax, label)
    axes[0].legend(fontsize=7)
    fig.suptitle(
        f"{BANNER} — workload {meta['workload']}, {meta['engines']} sim engine(s), "
        f"{meta['programs']} programs (solid: live; dashed: simulator)"
    )
    save_figure(fig, path)


def write_outputs(payload: dict[str, Any], out: Path) -> dict[str, Path]:
    """results.json, the PNG and the Markdown report; returns their paths."""
    name = payload["meta"]["workload"]
    return write_report_files(
        out,
        payload,
        png=f"latency_vs_rate_{name}.live-simulated-engines.png",
        md=f"results_{name}.live-simulated-engines.md",
        plot=plot,
        markdown=markdown,
    )


def rich_tables(payload: dict[str, Any]) -> list[Any]:
    """Console tables: runs, live vs simulated, policy ratios."""
    meta = payload["meta"]
    sections = [
        (f"{BANNER}: runs — {meta['workload']}", run_rows(payload)),
        (f"{BANNER}: live vs simulated — {meta['workload']}", agreement_rows(payload)),
        (f"{BANNER}: where the live/sim gap comes from — {meta['workload']}", gap_rows(payload)),
    ]
    if payload.get("comparison"):
        c = payload["comparison"]
        sections.append(
            (f"{BANNER}: {c['baseline']} / {c['policy']} — {meta['workload']}", ratio_rows(payload))
        )
    return [rich_table(title, header, rows) for title, (header, rows) in sections]
