"""`autellix bench ablations`, `sim-summary` and `textout` end to end on tiny inputs: the real
simulator, the committed SIMULATED results and the real output-text code, no stand-ins."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from autellix.bench.ablations.report import markdown
from autellix.cli.app import build_app

ROOT = Path(__file__).resolve().parents[2]
SIM = ROOT / "bench" / "sim"
GPU_SETS = SIM / "ablations" / "gpu-a100-llama8b"


def _autellix(*args: str) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it (its results record `sys.argv` as their command)."""
    return subprocess.run(
        [sys.executable, "-m", "autellix.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200"},
    )


def test_bench_help_lists_the_simulator_and_textout_commands() -> None:
    res = CliRunner().invoke(build_app(), ["bench", "--help"], terminal_width=200)
    assert res.exit_code == 0, res.output
    for name in ("ablations", "sim-summary", "textout"):
        assert name in res.output


def test_sim_summary_regenerates_the_committed_summary() -> None:
    res = CliRunner().invoke(build_app(), ["bench", "sim-summary", str(SIM)])
    assert res.exit_code == 0, res.output
    assert res.output == (SIM / "summary.md").read_text()
    assert "## Profile `cpu-tiny`" in res.output and "| mixed | 5 | fcfs |" in res.output


def test_sim_summary_tables_cover_every_profile_and_ablation_set() -> None:
    res = CliRunner().invoke(build_app(), ["bench", "sim-summary", str(SIM), "--tables"])
    assert res.exit_code == 0, res.output
    head = res.output.splitlines()[2]
    assert "`gpu-a100-llama8b`" in head and "`cpu-tiny`" in head
    for f in sorted(GPU_SETS.glob("*.json")):
        if f.stem != "balancer":  # a summary over the balance-<n> sets, not a sweep
            assert f"## ablation gpu-a100-llama8b {f.stem}\n" in res.output
    assert "## ablation gpu-a100-llama8b balancer\n" not in res.output


def test_sim_summary_of_a_directory_without_results_is_empty(tmp_path: Path) -> None:
    res = CliRunner().invoke(build_app(), ["bench", "sim-summary", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "## Profile" not in res.output
    res = CliRunner().invoke(build_app(), ["bench", "sim-summary", str(tmp_path / "none")])
    assert res.exit_code == 2


def test_sim_summary_reads_only_sweeps_where_their_layout_puts_them(tmp_path: Path) -> None:
    """<root>/<workload>/ and <root>/<profile>/<workload>/ only: the same results.json in a
    study's own folder (e.g. gittins/<name>/) is not taken for the profile's sweep."""
    (tmp_path / "mixed").mkdir()
    shutil.copy(SIM / "mixed" / "results.json", tmp_path / "mixed")
    alone = CliRunner().invoke(build_app(), ["bench", "sim-summary", str(tmp_path)]).output
    assert alone.count("### mixed") == 1 and "### lats" not in alone
    study = tmp_path / "study" / "lats-2"
    study.mkdir(parents=True)
    shutil.copy(SIM / "lats" / "results.json", study)
    res = CliRunner().invoke(build_app(), ["bench", "sim-summary", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert res.output == alone


def test_ablations_rejects_an_unknown_set_before_running(tmp_path: Path) -> None:
    args = ["bench", "ablations", "--only", "quanta,nosuch", "--programs", "5"]
    res = CliRunner().invoke(build_app(), [*args, "--out", str(tmp_path)])
    assert res.exit_code == 2
    assert "nosuch" in res.output
    assert list(tmp_path.iterdir()) == []


def test_ablations_set_then_one_variant_again(tmp_path: Path) -> None:
    """A whole set, then one variant re-run in parts: the other variants' runs are kept, the
    rates are the same multiples of capacity, and both commands are recorded."""
    base = ["bench", "ablations", "--only", "kv-bound", "--programs", "8", "--jobs", "1"]
    res = _autellix(*base, "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert "SIMULATED: gpu-a100-llama8b kv-bound" in res.stdout
    d = json.loads((tmp_path / "kv-bound.json").read_text())
    variants = ["fcfs-nocache", "fcfs", "plas", "atlas", "srpt"]
    assert list(d["meta"]["variants"]) == variants
    assert d["meta"]["programs"] == 8 and d["meta"]["sim_options"] == {
        "kv_capacity_tokens": "100000"
    }
    assert len(d["runs"]) == len(variants) * len(d["meta"]["rate_factors"])
    assert d["meta"]["command"].startswith("autellix bench ablations --only kv-bound")
    assert (tmp_path / "kv-bound.simulated.md").read_text() == markdown(d)
    assert (tmp_path / "kv-bound.simulated.png").stat().st_size > 0

    res = _autellix(*base, "--variants", "fcfs", "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr
    again = json.loads((tmp_path / "kv-bound.json").read_text())
    assert again["rates"] == d["rates"]
    assert " && autellix bench ablations" in again["meta"]["command"]
    kept = [r for r in d["runs"] if r["policy"] != "fcfs"]
    assert [r for r in again["runs"] if r["policy"] != "fcfs"] == kept
    fcfs = [r["avg_latency_per_token_s"] for r in again["runs"] if r["policy"] == "fcfs"]
    assert fcfs == [r["avg_latency_per_token_s"] for r in d["runs"] if r["policy"] == "fcfs"]


def test_balancer_summary_rebuilt_from_the_committed_sets(tmp_path: Path) -> None:
    """`--only balancer-summary` runs no set: it combines existing balance-<n> JSONs, here the
    committed ones, into exactly the committed balancer.* files."""
    for f in GPU_SETS.glob("balance-*.json"):
        shutil.copy(f, tmp_path / f.name)
    args = ["bench", "ablations", "--only", "balancer-summary", "--programs", "5"]
    res = CliRunner().invoke(build_app(), [*args, "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "balancer summary written" in res.output
    for name in ("balancer.json", "balancer.simulated.md"):
        assert (tmp_path / name).read_text() == (GPU_SETS / name).read_text()


def test_textout_compares_old_and_new_on_short_outputs() -> None:
    res = CliRunner().invoke(build_app(), ["bench", "textout", "--sizes", "200"])
    assert res.exit_code == 0, res.output
    rows = [line.split("|")[1:-1] for line in res.output.splitlines() if "| 200 |" in line]
    assert len(rows) >= 2  # toy word-piece without and with stops (+ BPE when installed)
    for row in rows:
        old_dec, new_dec = float(row[4].replace(",", "")), float(row[6])
        assert new_dec < old_dec  # the incremental algorithm decodes fewer tokens per token
    res = CliRunner().invoke(build_app(), ["bench", "textout", "--sizes", "0,200"])
    assert res.exit_code == 2
