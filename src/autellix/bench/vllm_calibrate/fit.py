"""The per-iteration cost model fitted to the experiments:
`t_iter = a + b*decode_seqs + c*prefill_tokens (+ d*decode_context + e*prefill^2)`.

Two statistics: "low" (10th percentile: the engine when it has its core; other jobs on shared
cores only ever add time) and "median" (this machine as it was).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from autellix.bench.vllm_calibrate.engine_tap import IterRecord

FIT_TERMS = {
    "abc": ("decode_seqs", "prefill_tokens"),
    "abcd": ("decode_seqs", "prefill_tokens", "context_k_tokens"),
    "abcde": ("decode_seqs", "prefill_tokens", "context_k_tokens", "prefill_sq_m"),
}
COEF_NAMES = {
    "decode_seqs": "b_ms_per_decode_seq",
    "prefill_tokens": "c_ms_per_prefill_token",
    "context_k_tokens": "d_ms_per_1k_decode_context_tokens",
    "prefill_sq_m": "e_ms_per_prefill_tokens_squared_millions",
}


def design_points(results: dict[str, Any], stat: str) -> list[dict[str, float]]:
    """One point per decode configuration and per mixed prefill (4 decoding + one prompt).

    `stat="low"` takes each configuration's 10th-percentile step and fastest prefill sample: the
    engine's cost when it has its core (other jobs on the shared cores only ever add time);
    `stat="median"` takes the median step and every prefill sample: this machine as it was.
    Features: decode sequences in the step, prefill tokens in the step, the decoding sequences'
    summed context (thousands of tokens), and prefill tokens squared (millions; attention over the
    new chunk itself grows quadratically on CPU).
    """
    pts = []
    for row in results["decode"] + results.get("decode_long_context", []):
        b, p, steps = row["batch"], row["prompt_len"], row["steps_per_request"]
        pts.append(
            {
                "y": row["step_ms_p10" if stat == "low" else "step_ms_median"],
                "decode_seqs": b,
                "prefill_tokens": 0,
                "context_k_tokens": b * (p + steps / 2) / 1000,
                "prefill_sq_m": 0.0,
            }
        )
    for row in results["prefill"]:
        samples = list(
            zip(
                row["mixed_iter_ms"], row["mixed_decode_seqs"], row["mixed_ctx_tokens"], strict=True
            )
        )
        if stat == "low" and samples:
            samples = [min(samples)]
        for y, g, c in samples:
            pts.append(
                {
                    "y": y,
                    "decode_seqs": g,
                    "prefill_tokens": c,
                    "context_k_tokens": g * (64 + 8) / 1000,
                    "prefill_sq_m": c * c / 1e6,
                }
            )
    return pts


def iteration_points(records: list[IterRecord]) -> list[dict[str, float]]:
    return [
        {
            "y": r.dt * 1e3,
            "decode_seqs": r.gen_reqs,
            "prefill_tokens": r.ctx_tokens,
            "context_k_tokens": r.context_tokens / 1000,
            "prefill_sq_m": r.ctx_tokens**2 / 1e6,
        }
        for r in records
        if r.dt is not None and r.tag != "warmup"
    ]


def _predict(coef: dict[str, float], terms: tuple[str, ...], pt: dict[str, float]) -> float:
    return coef["a_ms"] + sum(coef[COEF_NAMES[t]] * pt[t] for t in terms)


def fit(results: dict[str, Any], records: list[IterRecord]) -> dict[str, Any]:
    """Weighted least squares (relative error) on the design points, per statistic and term set;
    checked on every busy iteration the probe saw (noise from other jobs included)."""
    its = iteration_points(records)
    out: dict[str, Any] = {"n_iterations": len(its)}
    for stat in ("low", "median"):
        pts = design_points(results, stat)
        y = np.array([p["y"] for p in pts])
        w = 1.0 / np.maximum(y, 1e-3)
        per: dict[str, Any] = {"n_design_points": len(pts)}
        for name, terms in FIT_TERMS.items():
            x = np.column_stack([np.ones_like(y), *[[p[t] for p in pts] for t in terms]])
            sol, *_ = np.linalg.lstsq(x * w[:, None], y * w, rcond=None)
            coef = {"a_ms": float(sol[0])} | {
                COEF_NAMES[t]: float(v) for t, v in zip(terms, sol[1:], strict=True)
            }
            rel_design = [abs(_predict(coef, terms, p) - p["y"]) / p["y"] for p in pts]
            rel_iter = [abs(_predict(coef, terms, p) - p["y"]) / max(p["y"], 1e-3) for p in its]
            per[name] = coef | {
                "median_rel_err_design": float(np.median(rel_design)),
                "max_rel_err_design": float(np.max(rel_design)),
                "median_rel_err_iterations": float(np.median(rel_iter)) if rel_iter else None,
            }
        out[stat] = per
    return out
