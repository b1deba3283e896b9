"""`stack.json`: `autellix up` says where it listens, and tools find it without flags.

The file itself (mode 0600, the current-stack pointer, a dead stack ignored), then a real
`autellix up --nats-port N`: its stack.json names that port and the HTTP and Postgres URLs,
`Client()` with no URL and `autellix programs show` with no `--database-url` reach it, and on
Ctrl-C the file and the pointer are gone.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from autellix.local import stack_file
from autellix.local.stack_file import StackInfo

AUTELLIX = [sys.executable, "-m", "autellix.cli"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _info(pid: int) -> StackInfo:
    return StackInfo(
        nats_url="nats://127.0.0.1:1",
        database_url="postgresql://postgres@/postgres?host=/x",
        namespace="ns1",
        http_url="http://127.0.0.1:2",
        pid=pid,
    )


def test_written_private_and_found_only_while_its_owner_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert stack_file.discover() is None
    path = stack_file.write(tmp_path / "data", _info(os.getpid()))
    assert path == tmp_path / "data" / "stack.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(stack_file.current_pointer().stat().st_mode) == 0o600
    assert stack_file.current_pointer().is_relative_to(tmp_path / "state")
    body = json.loads(path.read_text())
    assert body["version"] == 1
    assert body["credentials"] == {"nats_user_file": None, "api_key_file": None}
    assert stack_file.discover() == _info(os.getpid())

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    stack_file.write(tmp_path / "data", _info(int(dead.stdout)))
    assert stack_file.discover() is None  # its `autellix up` is gone: never connected to

    stack_file.remove(path)
    assert not path.exists() and not stack_file.current_pointer().exists()


@pytest.mark.timeout(240)
def test_up_writes_stack_json_and_tools_use_it(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTELLIX_")}
    env |= {"XDG_STATE_HOME": str(tmp_path / "state"), "COLUMNS": "200"}
    data, nats_port, http_port = tmp_path / "data", _free_port(), _free_port()
    argv = [*AUTELLIX, "up", "--ephemeral", "--quiet", "--engines", "1", "--data-dir", str(data)]
    argv += ["--nats-port", str(nats_port), "--http-port", str(http_port)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)  # fmt: skip
    try:
        path = data / "stack.json"
        deadline = time.monotonic() + 150
        while not path.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert path.exists(), proc.stdout.read() if proc.poll() is not None else "no stack.json"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        info = json.loads(path.read_text())
        assert info["nats_url"] == f"nats://127.0.0.1:{nats_port}"
        assert info["http_url"] == f"http://127.0.0.1:{http_port}"
        assert info["database_url"].startswith("postgresql://") and info["pid"] == proc.pid
        assert httpx.get(f"{info['http_url']}/health", timeout=10).status_code == 200

        script = textwrap.dedent(
            """
            import asyncio
            from autellix.client import Client

            async def main():
                async with Client() as client, client.program() as prog:
                    result = await prog.call("found by stack.json", max_tokens=5)
                    print(client.nats_url, prog.program_id, len(result.token_ids))

            asyncio.run(main())
            """
        )
        ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                             env=env, timeout=60)  # fmt: skip
        assert ran.returncode == 0, ran.stderr
        url, program_id, tokens = ran.stdout.split()
        assert (url, tokens) == (info["nats_url"], "5")
        shown = subprocess.run([*AUTELLIX, "programs", "show", program_id, "--json"],
                               capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
        assert shown.returncode == 0, shown.stdout + shown.stderr
        assert program_id in shown.stdout
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert not (data / "stack.json").exists()
    assert not (tmp_path / "state" / "autellix" / "current-stack.json").exists()
