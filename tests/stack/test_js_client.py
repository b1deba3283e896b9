"""The Node.js client (clients/js) against a live stack: `npm ci` if needed, then `node --test`.

Any language can submit calls: this test proves it for JavaScript with the npm `nats` package and
nothing from this repository but the protocol. Skipped only where node or npm is not installed.

The second test runs the client's NATS-restart test (`test/nats-restart.test.js`) against a stack
on a private nats-server (the session's shared one must not be killed): when the node test says
its calls are streaming, nats-server is SIGKILLed and started again on its port and data dir.
Postgres then must hold one finished call per client call id, with the tokens node received.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import pytest_asyncio
from polling import poll_until
from svc_stack import Stack, db_fetch, stack_fixture

from autellix.local.embedded import EmbeddedNats
from autellix.runtime.settings import Settings

JS = Path(__file__).resolve().parents[2] / "clients" / "js"

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("npm") is None, reason="node/npm not installed"
)


stack = stack_fixture(engines={"js-e1": ("--max-batch", "4", "--token-latency", "0.002")})

OUTAGE_S = 2.0


@pytest_asyncio.fixture(scope="module")
async def private_nats(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EmbeddedNats]:
    server = EmbeddedNats(tmp_path_factory.mktemp("nats"))
    await server.start_async()
    try:
        yield server
    finally:
        await server.stop_async()


@pytest_asyncio.fixture(scope="module")
async def outage_stack(
    private_nats: EmbeddedNats,
    make_database: Callable[..., str],
    namespace: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stack]:
    """A stack on `private_nats`: streams on its file store survive the restart."""
    settings = Settings(
        nats_url=private_nats.url, database_url=make_database(), namespace=f"{namespace}_jsnrs"
    )
    s = Stack(settings, tmp_path_factory.mktemp("logs"))
    s.start_frontend()
    s.start("scheduler", "scheduler", "--reconcile-after", "3")
    s.start_engine("jsnrs-e1", "--max-batch", "64", "--token-latency", "0.03")
    async with s.running():
        yield s


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
    except BaseException:  # over its limit, or the test gave up on it: no orphan node left
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out.decode(errors="replace")


async def _npm_ci() -> None:
    if not (JS / "node_modules" / "nats").is_dir():
        rc, out = await _run("npm", "ci", "--no-audit", "--no-fund", limit_s=240)
        assert rc == 0, f"npm ci failed:\n{out[-3000:]}"


def _node_env(stack: Stack) -> dict[str, str]:
    env = dict(os.environ)
    env["AUTELLIX_NATS_URL"] = stack.settings.nats_url or ""
    env["AUTELLIX_NAMESPACE"] = stack.settings.namespace
    env.pop("AUTELLIX_TEST_OUTAGE_FILE", None)
    return env


@pytest.mark.timeout(300)
async def test_node_client_against_the_live_stack(stack: Stack) -> None:
    await _npm_ci()
    rc, out = await _run("node", "--test", "test/", env=_node_env(stack), limit_s=180)
    assert rc == 0, f"node --test failed:\n{out[-6000:]}"
    # the restart test is skipped here: no outage is coming
    assert "# fail 0" in out and "# pass 7" in out and "# skipped 1" in out, out[-3000:]


async def _outage_when_streaming(server: EmbeddedNats, signal_file: Path) -> None:
    """Once node says its calls stream: SIGKILL nats-server, wait, start it on its port again."""
    await poll_until(signal_file.exists, within_s=60, what="node's calls streaming")
    popen = server.popen
    assert popen is not None
    os.killpg(popen.pid, signal.SIGKILL)
    await asyncio.to_thread(popen.wait, 10)
    await asyncio.sleep(OUTAGE_S)
    await asyncio.to_thread(server.restart)


@pytest.mark.timeout(240)
async def test_node_client_calls_survive_a_nats_restart(
    outage_stack: Stack, private_nats: EmbeddedNats, tmp_path: Path
) -> None:
    await _npm_ci()
    signal_file = tmp_path / "outage"
    env = _node_env(outage_stack)
    env["AUTELLIX_TEST_OUTAGE_FILE"] = str(signal_file)
    node = asyncio.create_task(
        _run("node", "--test", "test/nats-restart.test.js", env=env, limit_s=150)
    )
    outage = asyncio.create_task(_outage_when_streaming(private_nats, signal_file))
    await asyncio.wait({node, outage}, return_when=asyncio.FIRST_COMPLETED)
    if not outage.done():  # node ended before it said its calls stream
        outage.cancel()
        rc, out = node.result()
        pytest.fail(f"node ended before the outage (rc {rc}):\n{out[-6000:]}")
    try:
        await outage
    except BaseException:
        node.cancel()
        raise
    rc, out = await node
    assert rc == 0, f"node --test failed:\n{out[-6000:]}"
    assert "# pass 1" in out and "# fail 0" in out, out[-3000:]
    report = json.loads(await asyncio.to_thread(Path(f"{signal_file}.json").read_text))
    assert report["recovered"]["resumed"] > 0, report["recovered"]
    assert len(report["calls"]) == 12
    for key, call in report["calls"].items():
        rows = await db_fetch(
            outage_stack.settings.database_url,
            "SELECT id, status, output_token_ids FROM calls WHERE client_call_id = $1",
            key,
        )
        assert len(rows) == 1, f"{key}: {len(rows)} rows"
        assert rows[0]["status"] == "finished" and rows[0]["id"] == call["callId"]
        assert list(rows[0]["output_token_ids"]) == call["tokenIds"]
    log = await asyncio.to_thread((outage_stack.log_dir / "frontend.log").read_text)
    assert "NATS reconnected" in log, "the outage was real: the frontend reconnected"
