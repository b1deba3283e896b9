"""`autellix bench live` and `autellix bench overhead` end to end, plus the harness's pure parts.

The end-to-end tests run the real CLI in a subprocess against this session's NATS and Postgres
(each benchmark run creates and drops its own namespace and database there), with fast simulated
engines and a handful of small programs so they take seconds, not minutes.
"""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cli_proc import autellix
from results_contract import LATENCY_KEYS, RUN_KEYS

from autellix.bench.compare import live_vs_sim, policy_ratios
from autellix.bench.dbstats import _union_seconds
from autellix.bench.engine import SimEngineTiming
from autellix.bench.workload import live_options, load_live_workload
from autellix.sim import simulate
from autellix.sim.metrics import sustainable
from autellix.workloads.types import CallSpec, ProgramSpec

CONTRACT_KEYS = {*RUN_KEYS, *LATENCY_KEYS}
LIVE_KEYS = {"live", "backend", "sim_avg_latency_s", "sim_p99_latency_s", "policy_applied"}

# small and fast: 2 ms steps, batch 4, LATS of one iteration (11 calls)
WORKLOAD_OPTS = [
    "lats_calls_mean=11",
    "lats_iterations_max=1",
    "sharegpt_calls_mean=2",
    "sharegpt_calls_max=3",
]
ENGINE_FLAGS = [
    "--max-batch", "4",
    "--step-s", "0.002",
    "--step-per-seq-s", "0.0002",
    "--prefill-per-token-s", "0.00001",
]  # fmt: skip


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    proc = autellix(*args, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


# --------------------------------------------------------------------------- end to end


def test_bench_live_end_to_end(tmp_path: Path, nats_url: str, pg_admin_url: str) -> None:
    out = tmp_path / "live"
    wl_args = [a for o in WORKLOAD_OPTS for a in ("--workload-option", o)]
    _cli(
        "bench", "live",
        "--workload", "mixed",
        "--policies", "fcfs,atlas",
        "--programs", "5",
        "--rates", "2",
        "--seed", "3",
        "--nats-url", nats_url,
        "--database-url", pg_admin_url,
        "--out", str(out),
        "--engine-arg=--report-interval=0.2",
        *ENGINE_FLAGS,
        *wl_args,
    )  # fmt: skip
    payload = json.loads((out / "results.json").read_text())
    assert payload["live"] is True and payload["backend"] == "sim"
    assert payload["meta"]["engine"]["extra_args"][-1] == "--report-interval=0.2"
    assert "SIMULATED" in payload["banner"]
    assert {r["policy"] for r in payload["runs"]} == {"fcfs", "atlas"}
    assert payload["rates"] == [2.0]

    # every call of every program ran to completion: tokens match the workload exactly
    opts = live_options({k: int(v) for k, v in (o.split("=") for o in WORKLOAD_OPTS)})
    wl = load_live_workload("mixed", 5, 3, options=opts)
    expected_tokens = sum(p.output_tokens for p in wl.programs)
    expected_calls = sum(len(p.calls) for p in wl.programs)
    for r in payload["runs"]:
        assert CONTRACT_KEYS | LIVE_KEYS <= set(r), sorted(CONTRACT_KEYS | LIVE_KEYS - set(r))
        assert r["programs"] == 5 and r["rate"] == 2.0
        assert r["failed_calls"] == 0, r["errors"]
        assert r["output_tokens"] == expected_tokens
        assert r["calls"] == expected_calls
        assert r["db"]["calls"] == expected_calls
        assert 0 < r["p50_latency_s"] <= r["p99_latency_s"] <= r["max_latency_s"]
        assert r["avg_latency_per_token_s"] > 0
        assert r["sim_avg_latency_s"] > 0 and r["sim_p99_latency_s"] >= r["sim_p50_latency_s"]
        assert r["live_over_sim_avg_latency"] == pytest.approx(
            r["avg_latency_s"] / r["sim_avg_latency_s"]
        )
        assert len(r["engine_utilization"]) == 1 and 0 < r["engine_utilization"][0] <= 1
        (work,) = r["engine_work"].values()  # the sim engine's own step counters
        assert work["generated_tokens"] >= expected_tokens and work["step_ms"] > 0
        assert r["throughput_programs_per_s"] > 0
        cp = r["call_path"]  # every answered call split into hops (autellix.bench.callpath)
        assert cp["latency"]["calls"] == expected_calls
        for hop in ("to_frontend", "scheduling", "engine_queue", "engine", "to_client"):
            assert cp[hop]["calls"] == expected_calls and cp[hop]["mean_ms"] >= 0, hop
        assert 0 < cp["engine"]["mean_ms"] < cp["latency"]["mean_ms"]
    fcfs = next(r for r in payload["runs"] if r["policy"] == "fcfs")
    assert fcfs["policy_applied"] is True and fcfs["sim_policy"] == "fcfs"
    assert payload["probe"]["step_scale"] > 0 and payload["probe"]["per_call_overhead_s"] >= 0
    assert set(payload["sustainable"]["policies"]) == {"fcfs", "atlas"}
    assert payload["comparison"]["baseline"] == "fcfs"
    assert payload["live_vs_sim"]["total"] == 2
    assert (out / "latency_vs_rate_mixed.live-simulated-engines.png").stat().st_size > 1000
    md = (out / "results_mixed.live-simulated-engines.md").read_text()
    assert "SIMULATED" in md and "| fcfs |" in md
    assert "## Where a call's time goes" in md


def test_bench_overhead_writes_three_keys(tmp_path: Path, nats_url: str, pg_admin_url: str) -> None:
    out = tmp_path / "overhead"
    _cli(
        "bench", "overhead",
        "--calls", "5",
        "--warmup", "2",
        "--burst", "30",
        "--nats-url", nats_url,
        "--database-url", pg_admin_url,
        "--out", str(out),
    )  # fmt: skip
    data = json.loads((out / "overhead.json").read_text())
    assert 0 < data["p50_ms"] <= data["p99_ms"]
    assert data["decisions_per_s"] > 0
    assert data["sequential"]["calls"] == 5
    assert data["burst"]["accepted"] == 30 and data["burst"]["dispatched"] == 30
    # side by side with direct hops off: two alternating rounds of 5 calls per setting
    ab = data["direct_vs_jetstream"]
    assert ab["direct"]["calls"] == ab["jetstream"]["calls"] == 10
    assert len(ab["direct"]["p50_ms_per_round"]) == 2
    assert ab["jetstream_over_direct"]["p50"] > 0


def test_bench_overhead_dashboard_closed_vs_open(
    tmp_path: Path, nats_url: str, pg_admin_url: str
) -> None:
    out = tmp_path / "dashboard"
    _cli(
        "bench", "overhead",
        "--dashboard-browsers", "2",
        "--calls", "6",
        "--warmup", "2",
        "--rounds", "2",
        "--nats-url", nats_url,
        "--database-url", pg_admin_url,
        "--out", str(out),
    )  # fmt: skip
    data = json.loads((out / "results.json").read_text())
    # rotated order, same calls per round: closed-open then open-closed
    assert [r["mode"] for r in data["rounds"]] == ["closed", "open", "open", "closed"]
    assert all(r["calls"] == 6 for r in data["rounds"])
    assert data["closed"]["calls"] == data["open"]["calls"] == 12
    for mode in ("closed", "open"):
        assert 0 < data[mode]["p50_ms"] <= data[mode]["p90_ms"] <= data[mode]["p99_ms"]
    # the open rounds really had the dashboard streaming to them; the closed ones did not
    assert all((r["snapshots"] > 0) == (r["mode"] == "open") for r in data["rounds"])
    assert data["snapshots"]["bytes_median"] > 100 and data["snapshots"]["poll_s"] > 0
    ratio = data["open_over_closed"]["p50"]
    assert len(ratio["per_pair"]) == 2 and 0 < ratio["min"] <= ratio["max"]
    assert ratio["pooled"] == pytest.approx(data["open"]["p50_ms"] / data["closed"]["p50_ms"])
    assert data["meta"]["load_avg_start"] >= 0
    assert (out / "dashboard.png").stat().st_size > 1000
    assert "| pooled | open |" in (out / "dashboard.md").read_text()


def test_bench_overhead_policies_side_by_side(
    tmp_path: Path, nats_url: str, pg_admin_url: str
) -> None:
    out = tmp_path / "policies"
    _cli(
        "bench", "overhead",
        "--policies", "atlas,gittins",
        "--burst", "400",
        "--rounds", "2",
        "--nats-url", nats_url,
        "--database-url", pg_admin_url,
        "--out", str(out),
    )  # fmt: skip
    data = json.loads((out / "results.json").read_text())
    # rotated order: atlas, gittins, then gittins, atlas; every burst fully dispatched
    assert [(r["round"], r["policy"]) for r in data["runs"]] == [
        (0, "atlas"), (0, "gittins"), (1, "gittins"), (1, "atlas"),
    ]  # fmt: skip
    assert all(r["dispatched"] == r["accepted"] == 400 for r in data["runs"])
    atlas, gittins = data["policies"]["atlas"], data["policies"]["gittins"]
    assert atlas["over_first"]["of_means"] == 1.0
    assert gittins["over_first"]["of_means"] == pytest.approx(
        gittins["decisions_per_s"] / atlas["decisions_per_s"]
    )
    assert len(gittins["decisions_per_s_per_round"]) == 2
    assert gittins["decisions_per_s_min"] <= gittins["decisions_per_s"] > 0
    assert (out / "policies.png").stat().st_size > 1000
    assert "| gittins |" in (out / "policies.md").read_text()


# --------------------------------------------------------------------------- pure parts


def test_engine_profile_models_the_sim_engine_step_formula() -> None:
    timing = SimEngineTiming(step_s=0.01, step_per_seq_s=0.001, prefill_per_token_s=0.0001)
    prof = timing.profile()
    assert (prof.base_s, prof.decode_per_seq_s, prof.prefill_per_token_s) == (0.01, 0.001, 0.0001)
    assert prof.decode_per_ctx_token_s == 0 and prof.prefill_attn_s == 0
    assert prof.max_num_seqs == timing.max_batch
    # one call alone: a prefill step (prefill + its first token) then decode steps of 1 sequence
    call = CallSpec(0, 0, (), prompt_tokens=100, output_tokens=20)
    run = simulate([ProgramSpec("p", "x", 0.0, (call,))], policy="fcfs", profile=prof)
    expected = (0.01 + 0.0001 * 100) + 19 * timing.step_seconds(1)
    assert run.programs[0].latency_s == pytest.approx(expected, rel=1e-6)
    scaled = timing.profile(scale=2.0)
    assert scaled.base_s == pytest.approx(0.02) and scaled.decode_per_seq_s == pytest.approx(0.002)


def test_engine_args_carry_every_timing_term() -> None:
    timing = SimEngineTiming.from_profile("cpu-tiny", 8, step_s=0.005)
    args = timing.engine_args()
    assert args[args.index("--token-latency") + 1] == "0.005"
    assert float(args[args.index("--step-per-seq") + 1]) == timing.step_per_seq_s > 0
    assert float(args[args.index("--prefill-per-token") + 1]) == timing.prefill_per_token_s > 0
    assert timing.max_batch == 8


def test_union_of_busy_intervals() -> None:
    t = datetime(2026, 1, 1, tzinfo=UTC)

    def s(x: float) -> datetime:
        return t + timedelta(seconds=x)

    assert _union_seconds([]) == 0.0
    assert _union_seconds([(s(0), s(2)), (s(1), s(3)), (s(5), s(6))]) == pytest.approx(4.0)
    assert _union_seconds([(s(0), s(10)), (s(2), s(3))]) == pytest.approx(10.0)


def _rec(policy: str, rate: float, lpt: float, lat: float, p99: float) -> dict:
    return {
        "policy": policy,
        "rate": rate,
        "avg_latency_per_token_s": lpt,
        "p99_latency_per_token_s": lpt * 3,
        "avg_latency_s": lat,
        "p99_latency_s": p99,
        "throughput_programs_per_s": rate,
        "sim_avg_latency_s": lat * 1.1,
        "sim_p99_latency_s": p99,
    }


def test_policy_ratios_pick_a_saturated_rate_and_divide_the_right_way() -> None:
    runs = [
        _rec("fcfs", 1.0, 0.010, 5.0, 10.0),
        _rec("atlas", 1.0, 0.010, 5.0, 10.0),
        _rec("fcfs", 2.0, 0.015, 8.0, 20.0),
        _rec("atlas", 2.0, 0.012, 7.0, 25.0),
        _rec("fcfs", 3.0, 0.060, 30.0, 60.0),
        _rec("atlas", 3.0, 0.020, 15.0, 80.0),
    ]
    out = policy_ratios(runs, sustainable(runs), "atlas", "fcfs")
    assert out is not None
    assert out["headline_rate"] == 3.0 and out["headline"]["baseline_saturated"]
    assert out["headline"]["avg_latency_per_token_ratio"] == pytest.approx(3.0)
    assert out["headline"]["avg_latency_ratio"] == pytest.approx(2.0)
    assert out["headline"]["p99_latency_ratio"] == pytest.approx(0.75)  # atlas's tail is worse
    assert [x["baseline_saturated"] for x in out["per_rate"]] == [False, False, True]
    assert set(out["throughput_at_equal_latency"]) == {"2", "5", "10"}


def test_live_vs_sim_agreement_counts_runs_within_tolerance() -> None:
    runs = [_rec("fcfs", 1.0, 0.01, 5.0, 10.0), _rec("fcfs", 2.0, 0.01, 5.0, 10.0)]
    runs[1]["sim_avg_latency_s"] = 3.0  # live 5.0 vs sim 3.0: 67% off
    out = live_vs_sim(runs)
    assert out["total"] == 2 and out["within_tolerance"] == 1
    assert not out["all_within_tolerance"]
    assert out["max_abs_error"] == pytest.approx(5.0 / 3.0 - 1.0)
