"""`autellix programs show` and `autellix calls explain` read well in a 100-column terminal.

A real stack (frontend, scheduler, a simulated engine with a long id and 15 ms steps) runs one
program of several calls; the CLI then prints it with COLUMNS=100. Every line fits, every call
is one line whose id is printed whole (it is what `calls explain` takes), and every time carries
its unit ("ms" or "s"), never a bare number that could be minutes.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from typer.testing import CliRunner

from autellix.cli.app import build_app
from autellix.client import Client
from tests.svc_stack import Stack

pytestmark = pytest.mark.asyncio(loop_scope="module")

ENGINE = "sim-engine-with-a-long-name-0"
WIDTH = 100
TIME = re.compile(r"^-?\d+(\.\d+)? (ms|s)$")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(new_stack: Any) -> AsyncIterator[Stack]:
    s = new_stack()
    s.start_frontend()
    s.start("scheduler", "scheduler")
    s.start_engine(ENGINE, "--token-latency", "0.015", "--max-batch", "2")
    async with s.running():
        yield s


def cli(db: str, *args: str) -> Any:
    runner = CliRunner(env={"COLUMNS": str(WIDTH)})
    res = runner.invoke(build_app(), [*args, "--database-url", db])
    assert res.exit_code == 0, res.output
    return res.output


async def test_programs_show_fits_100_columns(stack: Stack) -> None:
    s = stack.settings
    async with Client(s.nats_url, namespace=s.namespace, timeout=60.0) as client:
        async with client.program(program_id="readable-prog") as prog:
            first = await prog.call("plan the trip", max_tokens=6)
            rest = await asyncio.gather(
                *(prog.call(f"search part {i}", max_tokens=4, thread=f"t{i}") for i in range(3))
            )
    call_ids = [first.call_id, *(r.call_id for r in rest)]
    assert s.database_url is not None
    out = await asyncio.to_thread(cli, s.database_url, "programs", "show", "readable-prog")
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= WIDTH, out
    for call_id in call_ids:
        (row,) = [line for line in lines if call_id in line]  # whole, on one line
        cells = row.split()
        queued, total = " ".join(cells[-4:-2]), " ".join(cells[-2:])
        assert TIME.match(queued) and TIME.match(total), row
    assert f"calls (all on engine {ENGINE})" in out  # named once, not on every line
    summary = next(line for line in lines if "waiting / run" in line)
    assert re.search(r"\d (ms|s) / \S+ (ms|s)", summary), summary

    out = await asyncio.to_thread(cli, s.database_url, "calls", "explain", first.call_id)
    assert max(len(line) for line in out.splitlines()) <= WIDTH, out
    line = next(line for line in out.splitlines() if "queued / run" in line)
    assert re.search(r"\d (ms|s) / \S+ (ms|s)", line), line
