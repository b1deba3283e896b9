"""`autellix bench cluster` end to end on a trimmed grid (two engine counts of light identities,
one and two scheduler replicas, short windows, `--parts engines_scaling`): cluster.json has every
key the report and the goals read, the figures are sane (every call answered, CPU and latency
positive, Postgres counters moving, heartbeat rows growing with the engines, commits not),
cluster.md and cluster.png are written, and no database is left behind.

The other parts' code runs in their own tests: `nats_failover` is what test_nats_cluster.py's
failover test runs (`autellix.bench.cluster.failover`), and the stack through PgBouncer is
test_pgbouncer.py; here they would triple the time.
"""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
from pathlib import Path

import asyncpg

from autellix.store.db import asyncpg_dsn

CELL_KEYS = {
    "engines", "schedulers", "repeats", "cpu_per_decision_ms", "cpu_per_decision_marginal_ms",
    "idle_cpu_per_s", "decisions_per_s", "dispatch_p50_ms", "dispatch_p99_ms", "commits_per_s",
    "rows_written_per_s", "idle_commits_per_s", "idle_rows_written_per_s", "lost",
}  # fmt: skip


def _cluster_databases(url: str) -> list[str]:
    async def names() -> list[str]:
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            rows = await conn.fetch(
                "SELECT datname FROM pg_database WHERE datname LIKE 'autellix_cluster_%'"
            )
        finally:
            await conn.close()
        return [r["datname"] for r in rows]

    return asyncio.run(names())


def test_bench_cluster_trimmed_grid(tmp_path: Path, nats_url: str, pg_admin_url: str) -> None:
    before = set(_cluster_databases(pg_admin_url))
    out = tmp_path / "cluster"
    proc = subprocess.run(
        [
            sys.executable, "-m", "autellix.cli", "bench", "cluster",
            "--engines", "4,40", "--schedulers", "1,2", "--window", "1", "--repeats", "1",
            "--rate", "30", "--idle", "2", "--warmup", "0.5", "--parts", "engines_scaling",
            "--nats-url", nats_url, "--database-url", pg_admin_url, "--out", str(out),
        ],
        capture_output=True,
        text=True,
        timeout=170,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((out / "cluster.json").read_text())
    es = data["engines_scaling"]
    cells = {(c["engines"], c["schedulers"]): c for c in es["cells"]}
    assert set(cells) == {(4, 1), (4, 2), (40, 1), (40, 2)}
    for c in cells.values():
        assert CELL_KEYS <= set(c), CELL_KEYS - set(c)
        assert c["lost"] == 0
        assert c["cpu_per_decision_ms"] > 0 and c["decisions_per_s"] > 10
        assert 0 < c["dispatch_p50_ms"] <= c["dispatch_p99_ms"] < 10_000
        assert c["commits_per_s"] > 0 and c["rows_written_per_s"] > 0
    for row in es["rows"]:  # every call of a window was answered
        assert row["completed"] == row["decisions"] > 0
    # ten times the engines: more heartbeat rows, not ten times the commits. Loose bound: Postgres
    # flushes a backend's table counters up to a second late (10 s when it idles), so a 2 s idle
    # window on a busy 2-core host sees from ~3x to ~10x the rows
    assert (
        cells[(40, 1)]["idle_rows_written_per_s"] > 1.5 * cells[(4, 1)]["idle_rows_written_per_s"]
    )
    assert cells[(40, 1)]["idle_commits_per_s"] < 3 * cells[(4, 1)]["idle_commits_per_s"] + 5
    assert {g["schedulers"] for g in es["goals"]} == {1, 2}
    for g in es["goals"]:
        assert g["engine_growth"] == 10 and math.isfinite(g["cpu_per_decision_ratio"])
    assert "nats_failover" not in data and "pgbouncer" not in data  # only the parts asked for
    md = (out / "cluster.md").read_text()
    assert "## engines_scaling" in md and "## nats_failover" not in md
    assert (out / "cluster.png").stat().st_size > 10_000
    assert set(_cluster_databases(pg_admin_url)) <= before
