"""`autellix bench resume`: a preemption through the whole stack on the REAL vLLM engine.

The end-to-end test runs the real CLI in a subprocess against this session's NATS and Postgres
on the tiny dummy-weight Llama (one vLLM start-up, 30-90 s on a shared 2-core machine): one
trial, prefix caching on only. The other test is fast: option checking.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from cli_proc import autellix

PROMPT = 64


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return autellix("bench", "resume", *args, timeout=timeout)


def test_prompt_sizes_must_be_positive_integers() -> None:
    for bad in ("0", "256,x", ""):
        proc = _cli("--sizes", bad)
        assert proc.returncode == 2, (bad, proc.stdout, proc.stderr)
        assert "positive comma-separated integers" in " ".join(proc.stderr.split())


@pytest.mark.vllm
@pytest.mark.timeout(600)
def test_bench_resume_preempts_and_resumes_the_victim(
    tmp_path: Path, nats_url: str, pg_admin_url: str
) -> None:
    out = tmp_path / "resume"
    proc = _cli(
        "--model", "dummy:tiny",
        "--model-dir", str(tmp_path / "models"),
        "--sizes", str(PROMPT),
        "--repeat", "1",
        "--max-model-len", "1024",
        "--kv-cache-gib", "0.0625",
        "--no-uncached",
        "--nats-url", nats_url,
        "--database-url", pg_admin_url,
        "--out", str(out),
        timeout=540,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    payload = json.loads((out / "resume.json").read_text())
    (trial,) = payload["trials"]
    # the victim was preempted once by the one-token call and still got all its tokens
    assert trial["prompt_tokens"] == PROMPT and trial["prefix_caching"] is True
    assert trial["preemptions"] == 1 and trial["victim_tokens"] == 400
    # it resumed after the top call's final, and its longest pause spans that resume
    assert 0 < trial["resume_s"] <= trial["stall_s"]
    assert 0 < trial["top_run_s"] <= trial["top_latency_s"]
    (row,) = payload["summary"]
    assert row["all_exact"] is True and row["trials"] == 1
    md = (out / "resume.md").read_text()
    assert "dummy weights" in md and f"| {PROMPT} | on |" in md
