"""The Node.js client (clients/js) against a live stack: `npm ci` if needed, then `node --test`.

Any language can submit calls: this test proves it for JavaScript with the npm `nats` package and
nothing from this repository but the protocol. Skipped only where node or npm is not installed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from svc_stack import Stack

from autellix.settings import Settings

JS = Path(__file__).resolve().parents[1] / "clients" / "js"

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("npm") is None, reason="node/npm not installed"
)


@pytest.fixture(scope="module")
def module_settings(nats_url: str, make_database, namespace: str) -> Settings:
    return Settings(nats_url=nats_url, database_url=make_database(), namespace=f"{namespace}_js")


@pytest_asyncio.fixture(scope="module")
async def stack(
    module_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    s = Stack(module_settings, tmp_path_factory.mktemp("js-logs"))
    s.start("frontend", "frontend")
    s.start("scheduler", "scheduler")
    s.start_engine("js-e1", "--max-batch", "4", "--token-latency", "0.002")
    try:
        await s.wait_ready()
        yield s
    finally:
        await s.stop()


async def _run(*argv: str, env: dict[str, str] | None = None, limit_s: float) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=JS,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), limit_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out.decode(errors="replace")


@pytest.mark.timeout(300)
async def test_node_client_against_the_live_stack(stack: Stack) -> None:
    if not (JS / "node_modules" / "nats").is_dir():
        rc, out = await _run("npm", "ci", "--no-audit", "--no-fund", limit_s=240)
        assert rc == 0, f"npm ci failed:\n{out[-3000:]}"
    env = dict(os.environ)
    env["AUTELLIX_NATS_URL"] = stack.settings.nats_url or ""
    env["AUTELLIX_NAMESPACE"] = stack.settings.namespace
    rc, out = await _run("node", "--test", "test/", env=env, limit_s=180)
    assert rc == 0, f"node --test failed:\n{out[-6000:]}"
    assert "# fail 0" in out and "# pass 4" in out, out[-3000:]
