"""`autellix up` supervises: each part SIGKILLed in turn comes back, and the stack keeps serving.

Runs the stack the way `autellix up` does (``Stack`` with a restart policy, embedded NATS and
Postgres of its own, since those are parts that must come back too) under a steady load of
calls. After each kill: the part's restart is in ``supervisor.log`` (with the signal and the
delay), the stack is ready again (every engine heartbeats, the frontend answers) and a call
submitted after the recovery is answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from autellix.client import Client
from autellix.local.backoff import BackoffPolicy
from autellix.local.stack import EngineConfig, Stack, StackConfig
from autellix.runtime.settings import Settings

KILL_ORDER = ("engine-0", "scheduler-0", "frontend", "nats", "postgres")


async def _load(client: Client, stop: asyncio.Event, outcomes: list[str]) -> None:
    """Calls one after another until told to stop; a failure (a part is down) is recorded."""
    while not stop.is_set():
        try:
            async with client.program() as prog:
                await prog.call("load", max_tokens=16, timeout=30.0)
            outcomes.append("ok")
        except Exception as exc:
            outcomes.append(type(exc).__name__)
            await asyncio.sleep(0.2)


def _pid_of(stack: Stack, part: str) -> int:
    if part == "nats":
        assert stack.nats is not None and stack.nats.pid is not None
        return stack.nats.pid
    if part == "postgres":
        assert stack.postgres is not None and stack.postgres.pid is not None
        return stack.postgres.pid
    assert stack.group is not None
    return stack.group[part].pid


def _logged(log: Path, part: str, event: str) -> list[dict[str, object]]:
    if not log.exists():
        return []
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["service"] == part and r["event"] == event]


async def _until(what: str, check: object, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s}s: {what}")
        await asyncio.sleep(0.1)


@pytest.mark.timeout(420)
async def test_each_part_killed_comes_back_and_calls_are_answered(tmp_path: Path) -> None:
    config = StackConfig(
        engines=[EngineConfig("sim", 4), EngineConfig("sim", 4)],
        ephemeral=True,
        data_dir=tmp_path / "data",
        log_dir=tmp_path / "logs",
        restart=BackoffPolicy(initial_s=0.2, max_s=2.0),
    )
    stack = Stack(Settings(nats_url=None, database_url=None, namespace="uprestart"), config)
    async with stack:
        assert stack.restarter is not None
        log = tmp_path / "logs" / "supervisor.log"
        async with Client(stack.settings.nats_url, namespace="uprestart", timeout=60.0) as client:
            stop = asyncio.Event()
            outcomes: list[str] = []
            load = [asyncio.create_task(_load(client, stop, outcomes)) for _ in range(3)]
            try:
                await _until("load running", lambda: outcomes.count("ok") >= 3, 60)
                for part in KILL_ORDER:
                    old_pid = _pid_of(stack, part)
                    os.kill(old_pid, signal.SIGKILL)
                    t0 = time.monotonic()
                    await _until(
                        f"{part} restarted", lambda p=part: _logged(log, p, "restarted"), 90
                    )
                    assert _pid_of(stack, part) != old_pid
                    (exited,) = _logged(log, part, "exited")
                    assert exited["exit"] == "signal SIGKILL" and exited["pid"] == old_pid
                    assert float(exited["delay_s"]) <= 2.0  # type: ignore[arg-type]
                    await stack.wait_ready(90.0)  # every engine heartbeats, frontend answers
                    async with client.program() as prog:
                        result = await prog.call(f"after {part}", max_tokens=8, timeout=60.0)
                    assert len(result.token_ids) == 8
                    print(f"{part}: serving again {time.monotonic() - t0:.1f}s after SIGKILL")
            finally:
                stop.set()
                for task in load:
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
        assert outcomes.count("ok") > len(KILL_ORDER)
        # only what was killed restarted: the others rode out NATS' and Postgres' restarts
        # (they reconnect) instead of crashing
        restarted = [e.service for e in stack.restarter.events if e.event == "restarted"]
        assert restarted == list(KILL_ORDER), restarted
        assert not any(e.event == "restart_failed" for e in stack.restarter.events)


def _children_running(root: int, needle: str) -> list[int]:
    """Pids of live descendants of `root` whose command line contains `needle`."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                parents[int(entry.name)] = int(
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
                )
    found = []
    for pid in parents:
        p = pid
        while p in parents and p != root:
            p = parents[p]
        if p == root and pid != root:
            with contextlib.suppress(OSError):
                if (
                    needle
                    in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                ):
                    found.append(pid)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.timeout(240)
async def test_autellix_up_shows_the_restart_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTELLIX_")}
    env |= {"XDG_STATE_HOME": str(tmp_path / "state"), "COLUMNS": "200"}
    data = tmp_path / "data"
    argv = ["-m", "autellix.cli", "up", "--ephemeral", "--quiet", "--engines", "1"]
    argv += ["--data-dir", str(data), "--http-port", "0", "--nats-port", "0"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    out: list[str] = []

    async def read(stream: asyncio.StreamReader) -> None:
        async for line in stream:
            out.append(line.decode())

    reader = asyncio.create_task(read(proc.stdout))
    family: list[int] = []
    try:
        await _until("stack.json", lambda: (data / "stack.json").exists(), 150)
        info = json.loads((data / "stack.json").read_text())
        (engine,) = _children_running(proc.pid, "autellix.services.engine")
        os.kill(engine, signal.SIGKILL)
        await _until("the restart on the console", lambda: "restarted" in "".join(out), 60)
        text = "".join(out)
        assert "engine-0 (pid" in text and "exited with signal SIGKILL" in text, text
        assert proc.returncode is None, text  # the stack kept running
        (new_engine,) = _children_running(proc.pid, "autellix.services.engine")
        assert new_engine != engine
        user_file = info["credentials"]["nats_user_file"]
        async with Client(
            info["nats_url"], namespace=info["namespace"], user_file=user_file
        ) as client:
            async with client.program() as prog:
                result = await prog.call("after the restart", max_tokens=6, timeout=60.0)
        assert len(result.token_ids) == 6
        logged = [json.loads(x) for x in (data / "supervisor.log").read_text().splitlines()]
        assert [r["event"] for r in logged] == ["exited", "restarted"]
        family = _children_running(proc.pid, "")
    finally:
        proc.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(proc.wait(), 60)
        await reader
    assert code == 0, "".join(out)
    await _until("no child left", lambda: not any(_alive(p) for p in family), 15)
