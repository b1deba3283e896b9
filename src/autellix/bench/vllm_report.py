"""Outputs of `bench live --backend vllm`: results.json, results.md (tables incl. baseline /
Autellix ratios), latency.png and the console tables.

Every output says REAL vLLM engine, which system ran each policy (plain vLLM or Autellix), the
model and whether its weights are dummy (random; real timing).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autellix.bench import callpath, repeats
from autellix.bench.compare import SATURATION_FACTOR
from autellix.bench.plain_vllm import is_plain
from autellix.bench.reporting import md_table_lines, pyplot, rich_table, save_figure
from autellix.bench.vllm_compare import SERVED_FRACTION
from autellix.bench.vllm_suite import AUTELLIX_SYSTEM, BANNER, PLAIN_SYSTEM, model_label
from autellix.sim.report import fmt_ratio, write_json
from autellix.wire.protocol import EngineWork

KEYS = (
    ("avg_latency_per_token_s", "avg s/token"),
    ("p99_latency_per_token_s", "p99 s/token"),
    ("avg_latency_s", "avg latency s"),
    ("p95_latency_s", "p95 latency s"),
    ("p99_latency_s", "p99 latency s"),
    ("throughput_programs_per_s", "programs/s"),
    ("cache_hit_rate", "cache hit"),
    ("preemptions", "preemptions"),
    ("failed_calls", "failed calls"),
)


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def run_rows(payload: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """One row per (rate, policy): system, the paper's metrics, failures, load average."""
    several = repeats.repeat_count(payload["runs"]) > 1
    header = [
        "rate",
        *(["repeat"] if several else []),
        "policy",
        "system",
        *(label for _, label in KEYS),
        "engine ms/step",
        "mean batch",
        "load avg",
    ]
    rows = []
    for r in payload["runs"]:
        work = engine_work_total(r)
        rows.append(
            [
                f"{r['rate']:g}",
                *([str(r.get("repeat", 0))] if several else []),
                r["policy"],
                "plain vLLM" if r.get("plain_vllm") else "Autellix",
                *(_cell(r.get(k)) for k, _ in KEYS),
                f"{work['step_ms']:.1f}" if work else "-",
                f"{work['mean_batch']:.2f}" if work else "-",
                f"{r.get('load_avg_start', float('nan')):.1f}-"
                f"{r.get('load_avg_end', float('nan')):.1f}",
            ]
        )
    return header, rows


def engine_work_total(rec: dict[str, Any]) -> dict[str, float | int] | None:
    """A run's engine work over all its engines (`engine_work`: per engine id), or None for
    runs that did not count it (older results, sim engines)."""
    per = rec.get("engine_work") or {}
    if not per:
        return None
    total = {k: sum(w[k] for w in per.values()) for k in EngineWork.model_fields}
    return EngineWork(**total).summary()


def ratio_rows(payload: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Baseline / Autellix per rate (> 1: Autellix better; throughput Autellix / baseline)."""
    header = [
        "rate",
        "baseline (plain vLLM)",
        "saturated",
        "Autellix policy",
        "avg s/token",
        "avg latency",
        "p95 latency",
        "p99 latency",
        "throughput",
    ]
    rows = []
    for c in payload.get("comparisons") or []:
        growth = c.get("baseline_latency_per_token_growth")
        rows.append(
            [
                f"{c['rate']:g}",
                c["baseline"],
                ("yes" if c.get("baseline_saturated") else "no")
                + (f" ({growth:.1f}x" if growth else " (")
                + (
                    f", serves {c['baseline_served_fraction']:.0%} of the offered rate)"
                    if c.get("baseline_served_fraction") is not None
                    else ")"
                ),
                c["policy"],
                f"{c['latency_per_token_ratio']:.2f}x",
                f"{c['avg_latency_ratio']:.2f}x",
                f"{c['p95_latency_ratio']:.2f}x" if "p95_latency_ratio" in c else "-",
                f"{c['p99_latency_ratio']:.2f}x",
                f"{c['throughput_ratio']:.2f}x" if "throughput_ratio" in c else "-",
            ]
        )
    return header, rows


def saturation_lines(payload: dict[str, Any]) -> list[str]:
    """The saturation search's steps and what it concluded, and any warning (Markdown)."""
    out = [line for w in payload.get("warnings") or [] for line in ("", f"**{w}**")]
    search = payload.get("saturation")
    if not search:
        return out
    bound = {
        "exact": "the last rate before saturation",
        "upper": "at most: the first step already saturated",
        "lower": "at least: no step saturated",
    }[search["bound"]]
    rule = search["rule"]
    header = ["rate /s", "programs", "avg ms/token", "output tokens/s", "mean batch", "wall s"]
    rows = [
        [
            f"{st['rate']:.4g}",
            str(st["programs"]),
            f"{st['avg_latency_per_token_s'] * 1000:.1f}",
            f"{st['output_tokens_per_s']:.1f}",
            f"{st['mean_batch']:.2f}" if st.get("mean_batch") is not None else "-",
            f"{st['wall_s']:.0f}",
        ]
        for st in search["steps"]
    ]
    analytic = payload.get("analytic_capacity_programs_per_s")
    return [
        *out,
        "",
        "## Capacity: saturation search (plain vLLM, FCFS)",
        "",
        "From the probe's analytic estimate"
        + (f" ({analytic:.4g} programs/s)" if analytic else "")
        + f", rate x{search['factor']:g} per step on a fresh engine until latency per token "
        f"reached {rule['latency_factor']:g}x the first step's or output tokens/s grew by less "
        f"than {rule['follow']:.0%} of the rate's growth. Capacity "
        f"{search['capacity']:.4g} programs/s ({bound}); search wall "
        f"{search['wall_s'] / 60:.1f} min.",
        "",
        *md_table_lines(header, rows),
    ]


def markdown(payload: dict[str, Any]) -> str:
    """results.md: setup, every run, baseline/Autellix ratios, throughput at equal latency."""
    meta = payload["meta"]
    eng = meta["engine"]
    probe = payload.get("probe")
    lines = [
        f"# {BANNER}",
        "",
        f"**REAL vLLM engine** ({meta['vllm_version']}) on {meta['machine']}; "
        f"{meta.get('model_label') or model_label(eng)}; batch {eng['max_batch']}, "
        f"max model length {eng.get('max_model_len')}, KV {eng.get('kv_cache_gib')} GiB, "
        f"prefix caching on for every policy; Autellix engine `queue_ahead` "
        f"{eng.get('queue_ahead', 0)}"
        + (f"; vLLM processes at nice {eng['nice']}" if eng.get("nice") is not None else "")
        + (
            "; everything but vLLM's model worker kept off its core (`--pin-model-core`)."
            if eng.get("pin_model_core")
            else "."
        ),
        "",
        f"- plain vLLM (`vllm-fcfs`, `vllm-priority`): {PLAIN_SYSTEM}",
        f"- Autellix (every other policy): {AUTELLIX_SYSTEM}",
        "",
        f"Workload `{meta['workload']}` ({meta['programs']} programs, {meta['arrival']} "
        f"arrivals, seed {meta['seed']}); every run on a fresh engine with the same programs, "
        f"arrival times and prompt token ids. Wall {meta['wall_s'] / 60:.1f} min, load average "
        f"{meta['load_avg_start']:.1f} -> {meta['load_avg_end']:.1f}.",
        "",
        f"Command: `{meta.get('command', '')}`",
    ]
    if probe and payload.get("capacity_programs_per_s"):
        lines += [
            "",
            f"Capacity {payload['capacity_programs_per_s']:.4g} programs/s (analytic, on the "
            f"probe's measured profile: decode {probe['step_alone_s'] * 1000:.1f} ms/token alone, "
            f"{probe['step_full_batch_s'] * 1000:.1f} ms/step at batch {probe['batch']}, prefill "
            f"{probe['prefill_per_token_s'] * 1000:.3f} ms/token at {probe['prompt_tokens']}-token"
            f" prompts); rates = {meta.get('loads')} x capacity.",
        ]
    lines += saturation_lines(payload)
    lines += ["", "## Runs", "", *md_table_lines(*run_rows(payload))]
    summary = payload.get("repeat_summary")
    if summary:
        lines += [
            "",
            f"## Repeats ({summary['repeats']} of every run, policies in rotated order)",
            "",
            "Mean ± standard deviation (min-max) over the repeats; the ratio tables below "
            "compare these means.",
            "",
            *md_table_lines(*repeats.summary_rows(summary)),
            "",
            "Baseline / Autellix of the means, then each repeat's own ratio (its runs ran "
            "back to back), and in how many repeats Autellix was better:",
            "",
            *md_table_lines(*repeats.ratio_rows(summary)),
        ]
    if payload.get("comparisons"):
        lines += [
            "",
            "## Ratios: plain vLLM baseline / Autellix (> 1 means Autellix is better; "
            "throughput: Autellix / baseline)",
            "",
            "A baseline is *saturated* at a rate once its average latency per token is "
            f"{SATURATION_FACTOR:g}x its value at the lightest rate, or it completes fewer than "
            f"{SERVED_FRACTION:.0%} of the offered programs per second.",
            "",
            *md_table_lines(*ratio_rows(payload)),
        ]
    equal = payload.get("throughput_at_equal_latency") or {}
    if equal and len(payload.get("rates") or []) >= 2:
        lines += [
            "",
            "## Throughput at equal latency (sustainable-rate ratio Autellix / baseline)",
            "",
            "L* = m x the lowest average latency per token at the lightest rate; `>=`/`<=` "
            f"mark bounds ({len(payload.get('rates') or [])} rates: coarse).",
            "",
        ]
        ms = sorted({m for v in equal.values() for m in v}, key=float)
        rows = [
            [pair, *(fmt_ratio(v[m]["ratio"], v[m]["bound"]) if m in v else "-" for m in ms)]
            for pair, v in equal.items()
        ]
        lines += md_table_lines(["Autellix / baseline", *(f"m={m}" for m in ms)], rows)
    kinds = sorted({k for r in payload["runs"] for k in (r.get("per_kind") or {})})
    if len(kinds) > 1:
        lines += ["", "## Average program latency (s) per kind", ""]
        rows = []
        for r in payload["runs"]:
            pk = r.get("per_kind") or {}
            rows.append(
                [
                    f"{r['rate']:g}",
                    r["policy"],
                    *(f"{pk[k]['avg_latency_s']:.3g}" if k in pk else "-" for k in kinds),
                ]
            )
        lines += md_table_lines(["rate", "policy", *kinds], rows)
    if any(r.get("call_path") for r in payload["runs"]):
        lines += [
            "",
            "## Where a call's time goes (ms per call, mean / p90)",
            "",
            callpath.TABLE_NOTE,
            "",
            *md_table_lines(*callpath.table_rows(payload["runs"])),
        ]
    for f in payload.get("failed_runs") or []:
        lines += ["", f"**Run failed**: {f['policy']} @ {f['rate']:g}/s: `{f['error'][:300]}`"]
    return "\n".join(lines) + "\n"


def plot(payload: dict[str, Any], path: Path) -> None:
    """Latency per token, average and p99 program latency vs rate: Autellix solid, plain dashed."""
    plt = pyplot()
    runs = repeats.mean_runs(payload["runs"])  # means over repeats, if any
    meta = payload["meta"]
    policies = list(dict.fromkeys(r["policy"] for r in runs))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    for ax, (key, label) in zip(
        axes,
        [
            ("avg_latency_per_token_s", "avg latency per output token (s)"),
            ("avg_latency_s", "avg program latency (s)"),
            ("p99_latency_s", "p99 program latency (s)"),
        ],
        strict=True,
    ):
        for pol in policies:
            pts = sorted((r["rate"], r[key]) for r in runs if r["policy"] == pol)
            style = "--" if is_plain(pol) else "-"
            name = f"{pol} (plain vLLM)" if is_plain(pol) else f"{pol} (Autellix)"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker="o", label=name)
        ax.set_xlabel("program arrival rate (programs/s)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    eng = meta["engine"]
    label = meta.get("model_label") or model_label(eng)
    fig.suptitle(
        f"REAL vLLM engine ({label}, batch {eng['max_batch']}):"
        f" Autellix (solid) vs plain vLLM (dashed), workload {meta['workload']}"
    )
    fig.tight_layout()
    save_figure(fig, path)


def write_outputs(payload: dict[str, Any], out: Path) -> dict[str, Path]:
    """results.json, results.md and latency.png in `out`; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out / "results.json",
        "md": out / "results.md",
        "png": out / "latency.png",
    }
    write_json(paths["json"], payload)
    paths["md"].write_text(markdown(payload))
    plot(payload, paths["png"])
    return paths


def rich_tables(payload: dict[str, Any]) -> list[Any]:
    """Console tables: every run, and baseline / Autellix ratios."""
    sections = [(f"{BANNER}: runs", run_rows(payload))]
    if payload.get("comparisons"):
        sections.append((f"{BANNER}: plain vLLM / Autellix", ratio_rows(payload)))
    return [
        rich_table(title, header, rows, left=("policy", "system"))
        for title, (header, rows) in sections
    ]
