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


def _check_credentials(stack_json: Path, insecure: bool) -> None:
    """stack.json names the client's NATS user file (mode 0600), which runs a call, and the
    server refuses a connection without it; --insecure: no credentials, open server."""
    import json

    import nats

    from autellix.client import Client

    info = json.loads(stack_json.read_text())
    user_file = info["credentials"]["nats_user_file"]
    assert insecure or Path(user_file).stat().st_mode & 0o777 == 0o600

    models = f"{info['http_url']}/v1/models"
    key_file = info["credentials"]["api_key_file"]
    if insecure:
        assert key_file is None and httpx.get(models, timeout=10).status_code == 200
    else:
        assert Path(key_file).stat().st_mode & 0o777 == 0o600
        assert httpx.get(models, timeout=10).status_code == 401
        key = next(x for x in Path(key_file).read_text().split("\n") if x and x[0] != "#").split()
        auth = {"Authorization": f"Bearer {key[0]}"}
        assert httpx.get(models, headers=auth, timeout=10).status_code == 200
        with httpx.Client(base_url=info["http_url"], timeout=10) as ui:  # the dashboard too
            assert ui.get("/ui/api/snapshot").status_code == 401
            assert ui.post("/ui/login", data={"key": key[0]}).status_code == 303
            assert ui.get("/ui/api/session").json()["tenant"] == "default"
    if insecure:
        assert httpx.get(f"{info['http_url']}/ui/api/snapshot", timeout=10).status_code == 200

    async def run() -> None:
        if insecure:
            assert user_file is None
            nc = await nats.connect(info["nats_url"], max_reconnect_attempts=0)
            await nc.close()
            return
        with pytest.raises(Exception, match=r"(?i)authorization"):
            await nats.connect(info["nats_url"], max_reconnect_attempts=0, allow_reconnect=False)
        client = Client(info["nats_url"], namespace=info["namespace"], user_file=user_file)
        async with client, client.program() as prog:
            assert (await prog.call("hi", max_tokens=2, timeout=30.0)).text is not None

    import asyncio

    asyncio.run(run())


@pytest.mark.timeout(180)
@pytest.mark.parametrize("insecure", [False, True], ids=["default", "insecure"])
def test_up_embedded_starts_everything_and_sigterm_leaves_nothing(
    tmp_path: Path, insecure: bool
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    flags = ["--insecure"] if insecure else []
    proc = subprocess.Popen(
        [
            *AUTELLIX,
            "up",
            "--ephemeral",
            "--engines",
            "2",
            "--quiet",
            "--http-port",
            str(port),
            *flags,
        ],
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
        if "stack file" in line:  # the banner's last row
            break
    out = "".join(lines)
    assert "Autellix is up" in out, out
    assert "nats://127.0.0.1:" in out
    if insecure:
        assert "(embedded, NO AUTHENTICATION)" in out and "WARNING: --insecure" in out
    else:
        assert "(embedded, per-role users)" in out and "NATS client user" in out
    assert f"http://127.0.0.1:{port}/v1" in out
    assert sum("SIMULATED engine" in x for x in lines) == 2, out
    assert f"http://127.0.0.1:{port}/ui/" in out, out  # the dashboard's address
    assert ("dashboard login" in out) is not insecure, out  # and, with keys, how to log in
    stack_json = tmp_path / "data" / "stack.json"
    deadline = time.monotonic() + 30
    while not stack_json.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    _check_credentials(stack_json, insecure)
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
