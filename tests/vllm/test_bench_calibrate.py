"""`autellix bench calibrate`: the simulator's engine profile measured on the REAL vLLM engine.

The end-to-end test calibrates the `tiny` dummy-weight preset through the real CLI in a
subprocess (one vLLM start-up, ~50 s, and ~30 s of experiments on a shared 2-core machine). The
other tests are fast: option checking.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from cli_proc import autellix

from autellix.bench.vllm_calibrate.calibrate import PRESET_PLAN
from autellix.bench.vllm_calibrate.fit import COEF_NAMES, FIT_TERMS
from autellix.cli.bench.calibrate import PRESETS


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return autellix("bench", "calibrate", *args, timeout=timeout)


def test_the_cli_offers_exactly_the_presets_with_a_plan() -> None:
    assert sorted(PRESETS) == sorted(PRESET_PLAN)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--preset", "llama-8b"), "choose from tiny, bench"),
        (("--shape", "hidden=256"), "expected FIELD=INTEGER"),
        (("--shape", "hidden_size=big"), "expected FIELD=INTEGER"),
    ],
)
def test_bad_options_are_usage_errors(args: tuple[str, ...], message: str) -> None:
    proc = _cli(*args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in " ".join(proc.stderr.split())


@pytest.mark.vllm
@pytest.mark.timeout(600)
def test_calibrate_tiny_measures_and_fits_the_engine(tmp_path: Path) -> None:
    proc = _cli("--preset", "tiny", "--out", str(tmp_path), timeout=540)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    report = json.loads((tmp_path / "tiny.json").read_text())
    r = report["results"]
    batches = PRESET_PLAN["tiny"]["batches"]
    assert [row["batch"] for row in r["decode"]] == batches
    assert all(row["n_steps"] > 0 and row["step_ms_median"] > 0 for row in r["decode"])
    # a full batch steps slower than one sequence: what the per-sequence term is fitted to
    assert r["decode"][-1]["step_ms_median"] > r["decode"][0]["step_ms_median"]
    assert [row["prompt_len"] for row in r["prefill"]] == PRESET_PLAN["tiny"]["prefill"]
    # a re-sent prompt hits the prefix cache; a salted one does not
    for row in r["cached_prefix"]:
        assert row["resent_cached_tokens"] > 0 and row["salted_cached_tokens"] == 0
    assert {row["mode"] for row in r["resume"]} == {"cached", "salted"}
    for stat in ("low", "median"):
        for name, terms in FIT_TERMS.items():
            coef = r["fit"][stat][name]
            assert all(COEF_NAMES[t] in coef for t in terms) and "a_ms" in coef
    assert r["fit"]["n_iterations"] > 0 and report["iterations"]
    md = (tmp_path / "tiny.md").read_text()
    assert "## vLLM probe: preset `tiny`" in md and "Per-iteration latency fit" in md
    assert "Command: `autellix bench calibrate --preset tiny" in md
