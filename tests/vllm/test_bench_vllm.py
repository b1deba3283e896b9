"""`autellix bench live --backend vllm`: plain vLLM vs Autellix on the REAL vLLM engine (issue 6).

The end-to-end test runs the real CLI in a subprocess against this session's NATS and Postgres
on the tiny dummy-weight Llama: one plain-vLLM run (`vllm-fcfs`, AsyncLLM in the CLI process) and
one Autellix run (`plas`, the whole stack with an engine service on vLLM), each on a fresh
engine, so it pays two vLLM start-ups (30-90 s each on this shared machine). The other tests are
fast: option checking and the report's derived numbers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from cli_proc import autellix
from results_contract import LATENCY_KEYS

from autellix.bench.plain_vllm import VllmEngineSpec
from autellix.bench.repeats import mean_runs, rotated
from autellix.bench.vllm_compare import comparisons, summarize
from autellix.bench.vllm_report import markdown, plot
from autellix.bench.vllm_suite import model_label
from autellix.bench.workload import live_options, load_live_workload

METRICS = (*LATENCY_KEYS, "makespan_s")
# 3 small ShareGPT conversations (2-3 turns) on dummy:tiny (batch 2: the plas run queues calls)
WORKLOAD_OPTS = ["sharegpt_calls_mean=2", "sharegpt_calls_max=3", "sharegpt_output_mean=16"]
PROGRAMS, SEED, RATE = 3, 1, 2.0


_cli = autellix


# --------------------------------------------------------------------------- fast


def test_plain_vllm_policies_need_the_vllm_backend() -> None:
    proc = _cli("bench", "live", "--workload", "sharegpt", "--policies", "vllm-fcfs,plas")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    err = " ".join(proc.stderr.split())  # rich wraps the message in a box
    assert "vllm-fcfs" in err and "need --backend vllm" in err and "--backend sim" in err


def test_vllm_backend_runs_one_engine_and_unknown_backends_are_refused() -> None:
    proc = _cli("bench", "live", "--workload", "sharegpt", "--backend", "vllm", "--engines", "2")
    assert proc.returncode == 2 and "one engine" in " ".join(proc.stderr.split())
    proc = _cli("bench", "live", "--workload", "sharegpt", "--backend", "tgi")
    assert proc.returncode == 2 and "sim or vllm" in " ".join(proc.stderr.split())


def _rec(policy: str, rate: float, lpt: float, avg: float, thr: float) -> dict[str, Any]:
    return {
        "policy": policy,
        "rate": rate,
        "plain_vllm": policy.startswith("vllm-"),
        "avg_latency_per_token_s": lpt,
        "p99_latency_per_token_s": 2 * lpt,
        "avg_latency_s": avg,
        "p95_latency_s": 1.5 * avg,
        "p99_latency_s": 2 * avg,
        "throughput_programs_per_s": thr,
    }


def _meta() -> dict[str, Any]:
    """The `meta` block of a results.json for `markdown` (dummy:bench, one workload)."""
    spec = VllmEngineSpec(model="dummy:bench")
    return {
        "workload": "mixed",
        "programs": 2,
        "arrival": "poisson",
        "seed": 0,
        "engine": spec.describe(),
        "model_label": model_label(spec),
        "vllm_version": "x",
        "machine": "m",
        "wall_s": 1.0,
        "load_avg_start": 0.0,
        "load_avg_end": 0.0,
    }


def test_comparisons_divide_baseline_by_autellix_and_flag_saturation() -> None:
    runs = [
        _rec("vllm-fcfs", 0.5, 0.02, 4.0, 0.5),
        _rec("atlas", 0.5, 0.02, 4.0, 0.5),
        _rec("vllm-fcfs", 1.0, 0.10, 30.0, 0.6),
        _rec("atlas", 1.0, 0.04, 20.0, 0.9),
    ]
    by = {(c["rate"], c["baseline"], c["policy"]): c for c in comparisons(runs)}
    assert set(by) == {(0.5, "vllm-fcfs", "atlas"), (1.0, "vllm-fcfs", "atlas")}
    hi = by[(1.0, "vllm-fcfs", "atlas")]
    assert hi["latency_per_token_ratio"] == pytest.approx(0.10 / 0.04)
    assert hi["avg_latency_ratio"] == pytest.approx(30.0 / 20.0)
    assert hi["throughput_ratio"] == pytest.approx(0.9 / 0.6)
    assert hi["baseline_saturated"] and not by[(0.5, "vllm-fcfs", "atlas")]["baseline_saturated"]

    payload = summarize({"rates": [0.5, 1.0], "meta": _meta(), "runs": runs})
    assert "vllm-fcfs" in payload["sustainable"]["policies"]
    assert set(payload["throughput_at_equal_latency"]) == {"atlas/vllm-fcfs"}
    md = markdown(payload)
    assert "REAL vLLM engine" in md and "dummy:bench (dummy weights" in md
    assert "| 1 | vllm-fcfs | yes (5.0x, serves 60% of the offered rate) | atlas | 2.50x |" in md
    # one rate only: saturation from served / offered programs per second alone
    (one,) = comparisons([r for r in runs if r["rate"] == 1.0])
    assert one["baseline_saturated"] and one["baseline_served_fraction"] == pytest.approx(0.6)
    (light,) = comparisons([r for r in runs if r["rate"] == 0.5])
    assert not light["baseline_saturated"]


def test_repeats_rotate_the_order_and_summarize_mean_spread_and_paired_ratios(
    tmp_path: Path,
) -> None:
    assert rotated(["a", "b", "c"], 0) == ["a", "b", "c"]
    assert rotated(["a", "b", "c"], 1) == ["b", "c", "a"]
    assert rotated(["a", "b", "c"], 4) == ["b", "c", "a"]
    # two repeats at one rate; in repeat 1 the baseline happened to run faster
    runs = []
    for k, (base, plas) in enumerate([(0.20, 0.08), (0.10, 0.08)]):
        for rec in (_rec("vllm-fcfs", 1.0, base, 30.0, 0.6), _rec("plas", 1.0, plas, 20.0, 0.6)):
            rec["repeat"] = k
            runs.append(rec)
    fcfs_mean, plas_mean = mean_runs(runs)
    assert plas_mean["avg_latency_per_token_s"] == pytest.approx(0.08)
    assert fcfs_mean["avg_latency_per_token_s"] == pytest.approx(0.15)
    assert fcfs_mean["repeats"] == 2 and "repeat" not in fcfs_mean
    meta = _meta()
    payload = summarize({"rates": [1.0], "meta": meta, "runs": runs})
    (c,) = payload["comparisons"]  # the ratio of the means, not of the last repeat
    assert c["latency_per_token_ratio"] == pytest.approx(0.15 / 0.08)
    summary = payload["repeat_summary"]
    assert summary["repeats"] == 2
    spread = {e["policy"]: e for e in summary["per_policy"]}["vllm-fcfs"]
    assert spread["avg_latency_per_token_s"]["min"] == pytest.approx(0.10)
    assert spread["avg_latency_per_token_s"]["max"] == pytest.approx(0.20)
    (ratio,) = summary["ratios"]
    lpt = ratio["avg_latency_per_token_s"]
    assert lpt["per_repeat"] == pytest.approx([2.5, 1.25]) and lpt["wins"] == 2
    md = markdown(payload)
    assert "## Repeats (2 of every run" in md
    assert "| 1 | vllm-fcfs | plas | 1.88x (2.50, 1.25; better in 2) |" in md
    assert "| 1 | 1 | plas | Autellix |" in md  # the runs table says which repeat
    plot(payload, tmp_path / "latency.png")  # one point per policy: the means
    assert (tmp_path / "latency.png").stat().st_size > 0
    # a benchmark run once has no repeat block
    single = summarize({"rates": [1.0], "meta": meta, "runs": runs[:2]})
    assert single["repeat_summary"] is None and "## Repeats" not in markdown(single)


def test_repeats_are_refused_without_the_vllm_backend() -> None:
    proc = _cli("bench", "live", "--workload", "sharegpt", "--repeats", "2")
    assert proc.returncode == 2 and "--backend vllm" in " ".join(proc.stderr.split())


# --------------------------------------------------------------------------- end to end


@pytest.mark.vllm
@pytest.mark.timeout(600)
def test_bench_live_vllm_end_to_end(tmp_path: Path, nats_url: str, pg_admin_url: str) -> None:
    out = tmp_path / "vllm"
    wl_args = [a for o in WORKLOAD_OPTS for a in ("--workload-option", o)]
    proc = _cli(
        "bench", "live",
        "--backend", "vllm",
        "--model", "dummy:tiny",
        "--max-batch", "2",
        "--max-model-len", "2048",
        "--kv-cache-gib", "0.0625",
        "--pin-model-core",
        "--workload", "sharegpt",
        "--policies", "vllm-fcfs,plas",
        "--programs", str(PROGRAMS),
        "--rates", str(RATE),
        "--seed", str(SEED),
        "--call-timeout", "240",
        "--nats-url", nats_url,
        "--database-url", pg_admin_url,
        "--out", str(out),
        *wl_args,
        timeout=540,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "REAL vLLM engine" in proc.stdout

    payload = json.loads((out / "results.json").read_text())
    assert payload["backend"] == "vllm" and payload["simulated"] is False
    assert "REAL vLLM" in payload["banner"] and payload["rates"] == [RATE]
    assert payload["failed_runs"] == []
    assert [r["policy"] for r in payload["runs"]] == ["vllm-fcfs", "plas"]

    # every call of every program ran to completion on both sides: tokens match the workload
    opts = live_options({k: json.loads(v) for k, v in (o.split("=") for o in WORKLOAD_OPTS)})
    wl = load_live_workload("sharegpt", PROGRAMS, SEED, options=opts)
    expected_tokens = sum(p.output_tokens for p in wl.programs)
    expected_calls = sum(len(p.calls) for p in wl.programs)
    for r in payload["runs"]:
        assert r["failed_calls"] == 0, r["errors"]
        assert r["programs"] == PROGRAMS and r["rate"] == RATE
        assert r["output_tokens"] == expected_tokens and r["calls"] == expected_calls
        for key in METRICS:
            assert r[key] > 0, key
        assert r["p50_latency_s"] <= r["p99_latency_s"] <= r["max_latency_s"]
        assert r["real_vllm_engine"] is True and r["backend"] == "vllm"
        assert r["model"] == "dummy:tiny" and r["dummy_weights"] is True
        assert "REAL vLLM engine" in r["engines_label"] and "dummy weights" in r["engines_label"]
        # the engine's own counters came back (in-process for plain vLLM, from the Autellix
        # engine's heartbeats), and the run had the model's core to itself where it could
        (work,) = r["engine_work"].values()
        assert work["generated_tokens"] >= expected_tokens and work["steps"] > 0
        # mean batch counts vLLM stat records, including the one after the last call finished
        # (0 running), so with batch 2 and few calls it can fall just under 1 (0.93 seen)
        assert work["step_ms"] > 0 and 0 < work["mean_batch"] <= 2
        if len(os.sched_getaffinity(0)) > 1:
            assert r["cpu_pin"]["model_cpus"] and r["cpu_pin"]["moved_threads"] > 0, r["cpu_pin"]
    plain, autellix = payload["runs"]
    assert plain["engine_work"]["vllm"]["generated_tokens"] == expected_tokens
    assert plain["plain_vllm"] is True and "plain vLLM" in plain["engines_label"]
    assert autellix["plain_vllm"] is False and autellix["engines_label"].startswith("Autellix")
    assert autellix["policy_applied"] is True and autellix["db"]["calls"] == expected_calls
    # where each call's time went: a plain-vLLM call is all engine, an Autellix call has hops
    assert plain["call_path"]["engine"]["calls"] == expected_calls
    assert plain["call_path"]["control"]["mean_ms"] == 0 and "scheduling" not in plain["call_path"]
    assert autellix["call_path"]["scheduling"]["calls"] == expected_calls
    assert autellix["call_path"]["control"]["mean_ms"] > 0
    (cmp_,) = payload["comparisons"]
    assert (cmp_["baseline"], cmp_["policy"]) == ("vllm-fcfs", "plas")
    assert cmp_["latency_per_token_ratio"] == pytest.approx(
        plain["avg_latency_per_token_s"] / autellix["avg_latency_per_token_s"]
    )

    md = (out / "results.md").read_text()
    assert "REAL vLLM engine" in md and "dummy:tiny (dummy weights" in md
    assert "## Where a call's time goes" in md
    assert "| vllm-fcfs | plain vLLM |" in md and "| plas | Autellix |" in md
    assert "| vllm-fcfs |" in md.split("## Ratios")[1]
    assert (out / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "latency.png").stat().st_size > 10_000
    assert not (out / "results.partial.json").exists()
