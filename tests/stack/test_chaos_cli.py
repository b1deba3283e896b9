"""`autellix chaos` end to end: a short round of every fault, then a small fuzz.

The command starts its own supervised stack (2 simulated engines, 2 scheduler replicas, the
frontend, embedded nats-server and Postgres, each a process), keeps streamed multi-call programs
running through the Python client, and SIGKILLs an engine, a scheduler replica, the frontend,
nats-server and Postgres one after another. From its chaos.json: every fault was run and served
calls, no accepted call was lost and none was answered twice or with a token repeated or missing
(the command checks the streams against the finals, the wire and Postgres), and the fuzz found no
crash and no `internal` error. Recovery times are timings: they are the benchmark's
(`bench/chaos/`), not asserted here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

FAULTS = ["engine", "scheduler", "frontend", "nats", "postgres"]


@pytest.mark.timeout(300)
def test_every_fault_loses_nothing_and_answers_once(tmp_path: Path) -> None:
    out = tmp_path / "chaos"
    proc = subprocess.run(
        [
            sys.executable, "-m", "autellix.cli", "chaos",
            "--out", str(out),
            "--programs", "3",
            "--pre-s", "2",
            "--post-s", "6",
            "--call-timeout", "60",
            "--fuzz-cases", "40",
            "--log-dir", str(tmp_path / "logs"),
        ],
        capture_output=True,
        text=True,
        timeout=280,
    )  # fmt: skip
    tail = (proc.stdout + proc.stderr)[-4000:]
    assert (out / "chaos.json").exists(), tail
    result = json.loads((out / "chaos.json").read_text())
    faults = {f["fault"]: f for f in result["faults"]}
    assert sorted(faults) == sorted(FAULTS), tail
    for name, f in faults.items():
        assert f["accepted"] > 0 and f["completed"] > 0, (name, f)
        assert f["lost"] == 0, (name, f["examples"], tail)
        assert f["duplicated"] == 0, (name, f["examples"], tail)
        assert f["accepted"] == f["completed"] + f["failed_explicitly"] + f["lost"], (name, f)
        assert f["restarted_s"] is not None, (name, f)  # the supervisor brought it back
    fz = result["fuzz"]
    assert fz["cases"] >= 30 and fz["crashes"] == fz["internal_errors"] == 0, fz
    assert result["fuzz_detail"]["still_serving"], result["fuzz_detail"]["not_serving"]
    assert proc.returncode == 0, tail
    for name in ("chaos.md", "chaos.png"):
        assert (out / name).stat().st_size > 0
