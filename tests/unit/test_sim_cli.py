"""Metrics and "throughput at equal latency" on hand-made outcomes, and `autellix sim` end to end
(on the real simulator)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from results_contract import LATENCY_KEYS, RUN_KEYS

from autellix.sim.metrics import (
    _ratio_bound,
    at_load,
    crossing_rate,
    outcome_metrics,
    run_record,
    sustainable,
    sustainable_absolute,
)
from autellix.sim.results import ProgramOutcome, SimRun
from autellix.workloads.types import CallSpec, ProgramSpec

FIX = Path(__file__).resolve().parents[1] / "fixtures"


def _outcome(i: int, arrival: float, finish: float, tokens: int, **kw) -> ProgramOutcome:
    base = dict(
        program_id=f"p{i}",
        kind=kw.pop("kind", "chat"),
        arrival_s=arrival,
        finish_s=finish,
        output_tokens=tokens,
        calls=2,
        waiting_s=1.0,
        executing_s=3.0,
        preemptions=1,
        cached_prompt_tokens=50,
        prompt_tokens=100,
    )
    base.update(kw)
    return ProgramOutcome(**base)


def test_outcome_metrics_by_hand() -> None:
    outs = [
        _outcome(0, 0.0, 10.0, 10),  # latency 10, 1.0 s/token
        _outcome(1, 1.0, 3.0, 4, waiting_s=3.0, executing_s=1.0, cached_prompt_tokens=0),
        _outcome(2, 2.0, 8.0, 0),  # zero tokens: divided by 1
    ]
    m = outcome_metrics(outs)
    assert m["programs"] == 3
    assert m["avg_latency_s"] == pytest.approx((10 + 2 + 6) / 3)
    assert m["avg_latency_per_token_s"] == pytest.approx((1.0 + 0.5 + 6.0) / 3)
    assert m["p50_latency_s"] == pytest.approx(6.0)
    assert m["p99_latency_s"] == pytest.approx(6 + 0.98 * 4)  # linear between 6 and 10
    assert m["waiting_fraction"] == pytest.approx(5.0 / 12.0)
    assert m["cache_hit_rate"] == pytest.approx(100 / 300)


def test_run_record_has_contract_keys_and_per_kind() -> None:
    outs = [_outcome(0, 0.0, 4.0, 4, kind="a"), _outcome(1, 2.0, 10.0, 2, kind="b")]
    run = SimRun("atlas", outs, 10.0, 7, [0.5, 0.25], 0.4, {"steps": 12})
    rec = run_record(run, workload="mixed", rate=0.5, engines=2)
    for key in (
        *RUN_KEYS,
        *LATENCY_KEYS,
        "cache_hit_rate",
        "avg_waiting_s",
        "avg_executing_s",
        "simulated",
    ):
        assert key in rec, key
    assert rec["simulated"] is True and rec["preemptions"] == 7 and rec["engines"] == 2
    assert rec["throughput_programs_per_s"] == pytest.approx(2 / 10.0)
    assert rec["engine_utilization"] == [0.5, 0.25] and rec["cache_hit_rate"] == 0.4
    assert set(rec["per_kind"]) == {"a", "b"}
    assert rec["per_kind"]["b"]["avg_latency_per_token_s"] == pytest.approx(4.0)


def test_crossing_interpolates_and_bounds() -> None:
    pts = [(1.0, 1.0), (2.0, 1.5), (4.0, 3.0)]
    rate, bound = crossing_rate(pts, 2.0)
    assert bound == "exact" and rate == pytest.approx(2.0 + (0.5 / 1.5) * 2.0)
    assert crossing_rate(pts, 5.0) == (4.0, "lower")
    assert crossing_rate(pts, 0.5) == (1.0, "upper")
    # the first crossing counts even if the curve dips back under later
    assert crossing_rate([(1, 1.0), (2, 3.0), (3, 1.0)], 2.0)[0] == pytest.approx(1.5)


def _rec(policy: str, rate: float, lpt: float, lat: float = 1.0) -> dict:
    return {"policy": policy, "rate": rate, "avg_latency_per_token_s": lpt,
            "avg_latency_s": lat, "p99_latency_s": 2 * lat}  # fmt: skip


def test_sustainable_levels_ratios_and_lower_bound() -> None:
    runs = [
        # fcfs: 0.1 s/tok at the lightest rate, crosses 0.2 between 2 and 4, 0.5 between 4 and 8
        _rec("fcfs", 1, 0.1), _rec("fcfs", 2, 0.15), _rec("fcfs", 4, 0.3), _rec("fcfs", 8, 1.3),
        # atlas: slightly slower when idle, never crosses 10x (1.0): lower bound at rate 8
        _rec("atlas", 1, 0.11), _rec("atlas", 2, 0.12), _rec("atlas", 4, 0.16),
        _rec("atlas", 8, 0.35),
    ]  # fmt: skip
    s = sustainable(runs)
    assert s["lightest_rate"] == 1 and s["reference_latency_per_token_s"] == 0.1
    assert s["slo_s_per_token"] == pytest.approx({"2": 0.2, "5": 0.5, "10": 1.0})
    f2 = s["policies"]["fcfs"]["2"]
    assert f2["bound"] == "exact" and f2["rate"] == pytest.approx(2 + (0.05 / 0.15) * 2)
    f5 = s["policies"]["fcfs"]["5"]
    assert f5["rate"] == pytest.approx(4 + (0.2 / 1.0) * 4)
    a2 = s["policies"]["atlas"]["2"]
    assert a2["rate"] == pytest.approx(4 + (0.04 / 0.19) * 4)
    a10 = s["policies"]["atlas"]["10"]
    assert a10["lower_bound"] and a10["rate"] == 8 and a10["bound"] == "lower"
    r = a2["ratio_to"]["fcfs"]
    assert r["ratio"] == pytest.approx(a2["rate"] / f2["rate"]) and r["bound"] == "exact"
    assert s["policies"]["atlas"]["10"]["ratio_to"]["fcfs"]["bound"] == "lower"
    assert "atlas" not in s["policies"]["atlas"]["2"]["ratio_to"]
    assert "fcfs" in s["policies"]["atlas"]["2"]["ratio_to"]  # baselines only
    assert "atlas" not in s["policies"]["fcfs"]["2"]["ratio_to"]


def test_sustainable_at_absolute_slos() -> None:
    runs = [_rec("fcfs", 1, 0.1), _rec("fcfs", 2, 0.3), _rec("atlas", 1, 0.1),
            _rec("atlas", 2, 0.15), _rec("atlas", 4, 0.25)]  # fmt: skip
    s = sustainable_absolute(runs, slos=(0.2, 0.05))
    assert s["slo_s_per_token"] == {"0.2": 0.2, "0.05": 0.05}
    f, a = s["policies"]["fcfs"]["0.2"], s["policies"]["atlas"]["0.2"]
    assert f["rate"] == pytest.approx(1.5) and a["rate"] == pytest.approx(3.0)
    assert a["ratio_to"]["fcfs"]["ratio"] == pytest.approx(2.0)
    assert s["policies"]["atlas"]["0.05"]["bound"] == "upper"  # over it even when idle


def test_sweep_variants_run_under_their_label() -> None:
    from autellix.sim.sweep import SweepConfig, run_sweep

    progs = [
        ProgramSpec(f"p{i}", "chat", 0.0, (CallSpec(0, 0, (), 50, 20 + 30 * (i % 3)),))
        for i in range(12)
    ]
    cfg = SweepConfig(
        workload="t",
        policies=["plas", "plas-nopreempt"],
        profile="cpu-tiny",
        jobs=1,
        variants={"plas-nopreempt": ("plas", {"preemptive": False, "max_num_seqs": 2})},
    )
    res = run_sweep(progs, cfg, rates=[0.5, 5.0], extend=False)
    labels = {r["policy"] for r in res.runs}
    assert labels == {"plas", "plas-nopreempt"}
    assert all(r["preemptions"] == 0 for r in res.runs if r["policy"] == "plas-nopreempt")
    assert set(res.sustainable["policies"]) == labels


def test_ratio_bounds() -> None:
    assert _ratio_bound("exact", "exact") == "exact"
    assert _ratio_bound("lower", "exact") == "lower"
    assert _ratio_bound("exact", "upper") == "lower"
    assert _ratio_bound("exact", "lower") == "upper"
    assert _ratio_bound("lower", "lower") == "unknown"


def test_at_load_interpolates_and_compares_to_oracle() -> None:
    runs = [_rec("srpt", 1, 0.1, lat=2.0), _rec("srpt", 3, 0.1, lat=4.0),
            _rec("atlas", 1, 0.1, lat=2.0), _rec("atlas", 3, 0.1, lat=8.0)]  # fmt: skip
    out = at_load(runs, capacity=2.5, load=0.8)  # rate 2.0: halfway
    assert out["rate"] == pytest.approx(2.0)
    assert out["avg_latency_s"] == pytest.approx({"srpt": 3.0, "atlas": 5.0})
    assert out["avg_latency_ratio_to_srpt"]["atlas"] == pytest.approx(5 / 3)


# ------------------------------------------------------------------------ end to end (real sim)

POLICIES = "fcfs-nocache,fcfs,mlfq,plas,atlas,srpt"


def test_cli_end_to_end(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from autellix.cli.app import build_app

    out = tmp_path / "out"
    args = [
        "sim", "--workload", "mixed", "--data", str(FIX / "sharegpt_small.json"),
        "--data", str(FIX / "BFCL_v3_multi_turn_fixture.json"), "--policies", POLICIES,
        "--engines", "1", "--rates", "0.05,0.2", "--programs", "9", "--seed", "1",
        "--profile", "cpu-tiny", "--out", str(out), "--jobs", "1", "--no-extend",
    ]  # fmt: skip
    res = CliRunner().invoke(build_app(), args)
    assert res.exit_code == 0, res.output
    assert "SIMULATED" in res.output
    data = json.loads((out / "results.json").read_text())
    assert data["simulated"] is True and "SIMULATED" in data["banner"]
    assert len(data["runs"]) == 6 * 2
    assert {r["policy"] for r in data["runs"]} == set(POLICIES.split(","))
    for r in data["runs"]:
        assert r["simulated"] is True and r["workload"] == "mixed" and r["programs"] == 9
        assert r["rate"] in (0.05, 0.2)
        assert isinstance(r["engine_utilization"], list) and len(r["engine_utilization"]) == 1
        assert r["avg_latency_per_token_s"] > 0 and math.isfinite(r["p99_latency_s"])
        assert 0.0 <= r["cache_hit_rate"] <= 1.0
    sust = data["sustainable"]
    assert set(sust["policies"]) == set(POLICIES.split(","))
    assert set(sust["policies"]["atlas"]) == {"2", "5", "10"}
    assert set(sust["policies"]["atlas"]["5"]["ratio_to"]) == {
        "fcfs-nocache",
        "fcfs",
        "mlfq",
        "srpt",
    }
    assert data["meta"]["sources"]["lats"] == "synthetic"
    assert (out / "latency_vs_rate_mixed.simulated.png").stat().st_size > 10_000
    md = (out / "results_mixed.simulated.md").read_text()
    assert md.startswith("# SIMULATED") and "| atlas |" in md


def test_analytic_capacity_by_hand() -> None:
    from autellix.sim import EngineProfile
    from autellix.sim.sweep import analytic_capacity
    from autellix.workloads.types import CallSpec, ProgramSpec

    prof = EngineProfile(
        name="hand", max_num_seqs=4, kv_capacity_tokens=10**9, base_s=0.04,
        decode_per_seq_s=0.01, prefill_per_token_s=0.001,
    )  # fmt: skip
    calls = (CallSpec(0, 0, (), 100, 10), CallSpec(1, 0, (0,), 150, 10, prefix_tokens=110))
    progs = [ProgramSpec("a", "chat", 0.0, calls)]
    # full batch of 4: step 0.04 + 4 * 0.01 = 0.08 s -> 0.02 s per token; 20 tokens = 0.4 s
    # prefill: (100 + 40) new tokens x 0.001 = 0.14 s -> 0.54 s per program
    assert analytic_capacity(progs, prof) == pytest.approx(1 / 0.54)
    assert analytic_capacity(progs, prof, engines=3) == pytest.approx(3 / 0.54)
    no_cache = 1 / (0.4 + 0.25)
    assert analytic_capacity(progs, prof, prefix_caching=False) == pytest.approx(no_cache)
    # a KV cache that holds one sequence: batch 1, 0.05 s per token
    tight = prof.replace(kv_capacity_tokens=130)  # mean decode context is 130 tokens
    assert analytic_capacity(progs, tight) == pytest.approx(1 / (20 * 0.05 + 0.14))


def _plain(output: str) -> str:
    """A CLI error as words: rich draws it in a box and wraps it at the terminal's width (a long
    path moves the wrap), so drop the box and fold white space before looking for a phrase."""
    return " ".join(output.translate(str.maketrans("│╭╮╰╯─", "      ")).split())


def test_cli_rejects_bad_input(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from autellix.cli.app import build_app

    app = build_app()
    base = ["sim", "--programs", "3", "--rates", "0.1", "--out", str(tmp_path), "--jobs", "1"]
    res = CliRunner().invoke(app, [*base, "--workload", "mixed", "--data", str(tmp_path / "x")])
    assert res.exit_code == 2 and "no such file" in _plain(res.output)
    res = CliRunner().invoke(app, [*base, "--workload", "lats", "--policies", "fifo"])
    assert res.exit_code == 2 and "unknown policies" in _plain(res.output)
    res = CliRunner().invoke(app, [*base, "--workload", "chess"])
    assert res.exit_code == 2
    res = CliRunner().invoke(app, [*base, "--workload", "lats", "--workload-option", "turns=3"])
    plain = _plain(res.output)
    assert res.exit_code == 2 and "--workload-option" in plain and "known:" in plain
    assert not (tmp_path / "results.json").exists()


def test_cli_workload_options_shape_the_programs(tmp_path: Path) -> None:
    """`--workload-option` overrides the paper sizes; the run records the options it used."""
    from typer.testing import CliRunner

    from autellix.cli.app import build_app

    base = ["sim", "--workload", "sharegpt", "--programs", "20", "--rates", "0.1", "--jobs", "1"]
    base += ["--policies", "fcfs,plas-np", "--no-extend"]
    short = tmp_path / "short"
    res = CliRunner().invoke(
        build_app(),
        [*base, "--out", str(short), "--workload-option", "sharegpt_calls_max=2",
         "--workload-option", "sharegpt_calls_mean=1.5",
         "--workload-option", "sharegpt_output_mean=20"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    data = json.loads((short / "results.json").read_text())
    opts = data["meta"]["workload_options"]
    assert opts["sharegpt_calls_max"] == 2 and opts["sharegpt_output_mean"] == 20
    stats = data["meta"]["workload_stats"]
    paper = tmp_path / "paper"
    res = CliRunner().invoke(build_app(), [*base, "--out", str(paper)])
    assert res.exit_code == 0, res.output
    paper_stats = json.loads((paper / "results.json").read_text())["meta"]["workload_stats"]
    assert stats != paper_stats
    assert {r["policy"] for r in data["runs"]} == {"fcfs", "plas-np"}
    assert all(r["preemptions"] == 0 for r in data["runs"])
