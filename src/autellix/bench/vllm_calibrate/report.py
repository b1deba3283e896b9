"""`<preset>.md`: one calibration's tables (decode, prefill, cached prefix, abort, resume) and
its fits."""

from __future__ import annotations

from typing import Any

from autellix.bench.vllm_calibrate.fit import COEF_NAMES, FIT_TERMS


def markdown(report: dict[str, Any]) -> str:
    r = report["results"]
    e = report["engine"]
    lines = [
        f"## vLLM probe: preset `{report['preset']}` (real vLLM {report['host']['vllm']}, CPU)",
        "",
        f"shape: {report['shape']}",
        "",
        f"max_num_seqs {report['plan']['max_num_seqs']}, block size {e['block_size']}, "
        f"KV capacity {e['kv_capacity_tokens']} tokens ({e['num_blocks']} blocks, "
        f"{report['plan']['kv_cache_gib']} GiB, {e['kv_bytes_per_token']} B/token), "
        f"max_num_batched_tokens {e['max_num_batched_tokens']}, start-up {e['startup_s']:.1f} s",
        "",
        "| decode batch | prompt | steps | step ms (median) | p10 | p90 | vLLM elapsed ms |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in r["decode"] + r["decode_long_context"]:
        lines.append(
            f"| {row['batch']} | {row['prompt_len']} | {row['n_steps']} | "
            f"{row['step_ms_median']:.2f} | {row['step_ms_p10']:.2f} | {row['step_ms_p90']:.2f} | "
            f"{row['vllm_elapsed_ms_median']:.2f} |"
        )
    lines += [
        "",
        "| prompt tokens | TTFT idle ms (min of 2) | mixed iterations ms (+4 decoding) |",
        "|---:|---:|---|",
    ]
    for row in r["prefill"]:
        mixed = ", ".join(
            f"{x:.1f} ({c} tok)"
            for x, c in zip(row["mixed_iter_ms"], row["mixed_ctx_tokens"], strict=True)
        )
        lines.append(f"| {row['prompt_len']} | {row['ttft_idle_ms_min']:.1f} | {mixed} |")
    lines += [
        "",
        "| prompt | re-sent | cached tokens | TTFT first ms | TTFT re-sent ms "
        "| TTFT salted (miss) ms |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in r["cached_prefix"]:
        lines.append(
            f"| {row['prompt_len']} | {row['resent_len']} | {row['resent_cached_tokens']} | "
            f"{row['first_ttft_ms']:.1f} | {row['resent_ttft_ms']:.1f} | "
            f"{row['salted_ttft_ms']:.1f} |"
        )
    lines += [
        "",
        "| abort: cancel returns ms | slot free ms | decode step ms |",
        "|---:|---:|---:|",
    ]
    for row in r["abort"]:
        lines.append(
            f"| {row['cancel_return_ms']:.2f} | {row['slot_free_ms']:.1f} | "
            f"{row['step_ms_median']:.1f} |"
        )
    lines += [
        "",
        "| resume | prompt+gen | cached | caller stall ms | resume TTFT ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in r["resume"]:
        lines.append(
            f"| {row['mode']} | {row['resume_prompt_len']} | {row['cached_tokens']} | "
            f"{row['stall_seen_by_caller_ms']:.1f} | {row['resume_ttft_ms']:.1f} |"
        )
    for stat, what in (
        ("low", "p10 decode steps / fastest prefill: the engine when it has its core"),
        ("median", "median decode steps / all prefill samples: this shared machine as it was"),
    ):
        f = r["fit"][stat]
        lines += [
            "",
            f"Per-iteration latency fit, **{stat}** ({what}); ms, weighted least squares on "
            f"{f['n_design_points']} design points, checked on {r['fit']['n_iterations']} "
            "busy iterations:",
            "",
            "| terms | formula | median rel err (design) | max (design) | median (all iters) |",
            "|---|---|---:|---:|---:|",
        ]
        for name, terms in FIT_TERMS.items():
            c = f[name]
            formula = f"{c['a_ms']:.3f}" + "".join(
                f" {'+' if c[COEF_NAMES[t]] >= 0 else '-'} {abs(c[COEF_NAMES[t]]):.5f}*{t}"
                for t in terms
            )
            lines.append(
                f"| {name} | t = {formula} | {c['median_rel_err_design']:.3f} | "
                f"{c['max_rel_err_design']:.3f} | {c['median_rel_err_iterations']:.3f} |"
            )
    lines += [
        "",
        f"Command: `{report['command']}`; "
        f"load average at start {report['host']['loadavg_at_start']}"
        " (2 shared cores: expect ±30% noise per iteration).",
        "",
    ]
    return "\n".join(lines)
