"""`autellix bench floor` end to end: the path's shape (client, frontend, scheduler and engine
processes, one Postgres round trip per box) measured through JetStream and over core NATS, on
this run's NATS and Postgres."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import asyncpg

from autellix.store.db import asyncpg_dsn


def _floor_databases(url: str) -> list[str]:
    async def names() -> list[str]:
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            rows = await conn.fetch(
                "SELECT datname FROM pg_database WHERE datname LIKE 'autellix_floor_%'"
            )
        finally:
            await conn.close()
        return [r["datname"] for r in rows]

    return asyncio.run(names())


def test_bench_floor_times_both_hop_kinds_and_leaves_no_database(
    tmp_path: Path, nats_url: str, pg_admin_url: str
) -> None:
    before = _floor_databases(pg_admin_url)
    out = tmp_path / "floor"
    proc = subprocess.run(
        [
            sys.executable, "-m", "autellix.cli", "bench", "floor",
            "--calls", "100",  # CPU times tick every 10 ms: enough calls to see each box
            "--warmup", "3",
            "--repeats", "1",
            "--nats-url", nats_url,
            "--database-url", pg_admin_url,
            "--out", str(out),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((out / "floor.json").read_text())
    assert [r["mode"] for r in data["results"]] == ["jetstream", "core"]
    for r in data["results"]:
        assert r["calls"] == 100 and r["repeat"] == 0
        assert 0 < r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"]
        # every box of the path was a process of its own and used CPU while the calls ran
        cpu = r["cpu_ms_per_call"]
        assert all(cpu[k] > 0 for k in ("client", "frontend", "scheduler", "engine"))
        assert cpu["total"] >= sum(cpu[k] for k in ("client", "frontend", "scheduler", "engine"))
    assert "jetstream" in proc.stdout and "core" in proc.stdout and "floor.json" in proc.stdout
    assert _floor_databases(pg_admin_url) == before  # its database is dropped again
