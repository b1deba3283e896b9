"""`autellix up`, `autellix demo` and `autellix db` as a user runs them: real processes.

`up` is tested in its fully embedded form (NATS from the wheel, Postgres from pgserver), since
that is what a fresh machine gets; `demo` against this run's servers, in its own database and
namespace.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

AUTELLIX = [sys.executable, "-m", "autellix.cli"]


def _descendants(pid: int) -> set[int]:
    """All live descendants of `pid` (from /proc), to prove nothing is left behind."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out: set[int] = set()
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in out:
                out.add(child)
                stack.append(child)
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    for key in ("AUTELLIX_NATS_URL", "AUTELLIX_DATABASE_URL", "AUTELLIX_NAMESPACE"):
        env.pop(key, None)
    env["AUTELLIX_DATA_DIR"] = str(tmp_path / "data")
    env["COLUMNS"] = "160"
    return env


@pytest.mark.timeout(180)
def test_up_embedded_starts_everything_and_sigterm_leaves_nothing(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [*AUTELLIX, "up", "--ephemeral", "--engines", "2", "--quiet", "--http-port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(tmp_path),
    )
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "SIMULATED engine" in line and sum("SIMULATED engine" in x for x in lines) == 2:
            break
    out = "".join(lines)
    assert "Autellix is up" in out, out
    assert "(embedded)" in out and "nats://127.0.0.1:" in out
    assert f"http://127.0.0.1:{port}/v1" in out
    health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=10)
    assert health.status_code == 200
    family = _descendants(proc.pid)
    # nats-server, postgres (+ its workers), frontend, scheduler, 2 engines, watchdog
    assert len(family) >= 6, out
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out + rest
    assert "stopped" in rest
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in family):
        time.sleep(0.2)
    left = [p for p in family if _alive(p)]
    assert not left, f"orphans left after SIGTERM: {left}"


@pytest.mark.timeout(240)
def test_demo_runs_mixed_workload_and_exits_zero(
    tmp_path: Path,
    nats_url: str,
    make_database: Callable[..., str],
    namespace: str,
) -> None:
    db = make_database(migrated=False)  # the demo's stack migrates it
    env = _env(tmp_path)
    result = subprocess.run(
        [
            *AUTELLIX,
            "demo",
            "--nats-url",
            nats_url,
            "--database-url",
            db,
            "--namespace",
            f"{namespace}demo",
            "--programs",
            "9",
            "--rate",
            "6",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=220,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "per-program results (SIMULATED engines)" in out
    for kind in ("sharegpt", "bfcl", "lats"):
        assert kind in out
    assert "throughput" in out and "programs/s" in out


def test_db_upgrade_and_current(make_database: Callable[..., str], tmp_path: Path) -> None:
    db = make_database(migrated=False)
    env = _env(tmp_path)
    cur = subprocess.run(
        [*AUTELLIX, "db", "current", "--database-url", db], capture_output=True, text=True, env=env
    )
    assert cur.returncode == 1 and "current: <none>" in cur.stdout
    up = subprocess.run(
        [*AUTELLIX, "db", "upgrade", "--database-url", db], capture_output=True, text=True, env=env
    )
    assert up.returncode == 0, up.stderr
    cur = subprocess.run(
        [*AUTELLIX, "db", "current", "--database-url", db], capture_output=True, text=True, env=env
    )
    from autellix.store.migrate import head_revision

    assert cur.returncode == 0 and f"current: {head_revision()}" in cur.stdout


def test_db_without_url_is_a_clear_error(tmp_path: Path) -> None:
    r = subprocess.run(
        [*AUTELLIX, "db", "upgrade"], capture_output=True, text=True, env=_env(tmp_path)
    )
    assert r.returncode == 2
    assert "--database-url" in r.stderr
