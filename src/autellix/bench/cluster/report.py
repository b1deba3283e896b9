"""cluster.json → cluster.md (tables, goals met or missed) and cluster.png (scaling panels)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from autellix.bench.reporting import fmt, md_table_lines, pyplot, save_figure


def _yes(ok: bool | None) -> str:
    return "met" if ok else "**missed**"


def markdown(p: dict[str, Any]) -> str:
    lines = [
        "# autellix bench cluster",
        "",
        f"{p['banner']}. `{p['command']}` on {p['machine']}, {p['date']}; load average "
        f"{fmt(p['load_avg']['start'], '.1f')} → {fmt(p['load_avg']['end'], '.1f')}; "
        f"{fmt(p['wall_s'], '.0f')} s.",
        "",
    ]
    es = p.get("engines_scaling")
    if es:
        plan = es["plan"]
        lines += [
            "## engines_scaling",
            "",
            f"One engine host process with N light identities (zero-time SIMULATED completions), "
            f"{fmt(plan['rate_per_s'], 'g')} calls/s for {fmt(plan['window_s'], 'g')} s per "
            f"phase, {plan['repeats']} repeat(s) (engine counts in rotated order; medians). CPU "
            "is all scheduler processes together (/proc); marginal = minus their idle CPU/s.",
            "",
        ]
        header = [
            "engines", "schedulers", "CPU/decision ms", "marginal ms", "sched idle CPU/s",
            "decisions/s", "dispatch p50 ms", "p99 ms", "p99 accept→dispatch",
            "p99 dispatch→start", "engine host idle CPU/s", "commits/s", "rows written/s",
            "idle commits/s", "idle rows/s",
        ]  # fmt: skip
        rows = [
            [
                str(c["engines"]), str(c["schedulers"]), fmt(c["cpu_per_decision_ms"], ".3g"),
                fmt(c["cpu_per_decision_marginal_ms"], ".3g"), fmt(c["idle_cpu_per_s"], ".2f"),
                fmt(c["decisions_per_s"], ".1f"), fmt(c["dispatch_p50_ms"], ".3g"),
                fmt(c["dispatch_p99_ms"], ".3g"), fmt(c.get("accept_to_dispatch_p99_ms"), ".3g"),
                fmt(c.get("dispatch_to_start_p99_ms"), ".3g"),
                fmt(c.get("idle_engine_host_cpu_per_s"), ".2f"), fmt(c["commits_per_s"], ".0f"),
                fmt(c["rows_written_per_s"], ".0f"), fmt(c["idle_commits_per_s"], ".1f"),
                fmt(c["idle_rows_written_per_s"], ".0f"),
            ]
            for c in es["cells"]
        ]  # fmt: skip
        lines += [*md_table_lines(header, rows), ""]
        if es["goals"]:
            lines += ["Goals (largest engine count against the smallest):", ""]
            gh = [
                "schedulers", "engines", "CPU/decision ratio (≤ 2)", "marginal ratio",
                "p99 ratio (≤ 2)", "p99 accept→dispatch", "p99 dispatch→start",
                "rows written ratio (≤ engine growth)", "idle rows ratio",
                "idle commits ratio",
            ]  # fmt: skip
            grows = [
                [
                    str(g["schedulers"]), f"{g['from_engines']} → {g['to_engines']}",
                    f"{fmt(g['cpu_per_decision_ratio'], '.2f')} ({_yes(g['cpu_met'])})",
                    fmt(g["cpu_per_decision_marginal_ratio"], ".2f"),
                    f"{fmt(g['dispatch_p99_ratio'], '.2f')} ({_yes(g['p99_met'])})",
                    fmt(g.get("accept_to_dispatch_p99_ratio"), ".2f"),
                    fmt(g.get("dispatch_to_start_p99_ratio"), ".2f"),
                    f"{fmt(g['rows_written_ratio'], '.2f')} of {fmt(g['engine_growth'], 'g')} "
                    f"({_yes(g['writes_met'])})",
                    fmt(g["idle_rows_written_ratio"], ".1f"),
                    fmt(g["idle_commits_ratio"], ".2f"),
                ]
                for g in es["goals"]
            ]  # fmt: skip
            lines += [*md_table_lines(gh, grows), ""]
    nf = p.get("nats_failover")
    if nf:
        keys = ("accepted", "completed", "failed_explicitly", "lost", "duplicated", "resubmitted")
        lines += [
            "## nats_failover",
            "",
            f"{nf['servers']} nats-server processes, JetStream R{nf['js_replicas']}, "
            f"{nf['schedulers']} schedulers, {nf['engines']} SIMULATED engines; "
            f"{fmt(nf['plan']['rate_per_s'], 'g')} calls/s of mixed programs for "
            f"{fmt(nf['plan']['load_s'], 'g')} s; the calls stream's leader "
            f"({nf['killed_server']}) SIGKILLed at {fmt(nf['plan']['kill_at_s'], 'g')} s and "
            f"restarted {fmt(nf['plan']['down_s'], 'g')} s later.",
            "",
        ]
        lines += md_table_lines(
            [*keys, "recovery_s", "server back s", "slowest call s"],
            [
                [str(nf[k]) for k in keys]
                + [
                    fmt(nf["recovery_s"], ".2f"),
                    fmt(nf["server_back_s"], ".1f"),
                    fmt(nf["slowest_call_s"], ".2f"),
                ]
            ],
        )
        g = nf["goals"]
        lines += [
            "",
            f"Goals: lost = 0 {_yes(g['lost_0'])}, duplicated = 0 {_yes(g['duplicated_0'])}, "
            f"recovery ≤ 5 s {_yes(g['recovery_le_5s'])}.",
            "",
        ]
    pb = p.get("pgbouncer")
    if pb:
        plan = pb["plan"]
        lines += [
            "## pgbouncer",
            "",
            f"{plan['rounds']} rounds, modes in rotated order, {fmt(plan['rate_per_s'], 'g')} "
            f"calls/s for {fmt(plan['load_s'], 'g')} s each; PgBouncer pool_mode = transaction, "
            f"{plan['pool_size']} server connections. Latency = submit → final at the client.",
            "",
        ]
        mh = [
            "mode", "submitted", "completed", "failed", "lost", "duplicated",
            "latency p50 ms", "p99 ms", "dispatch p50 ms", "p99 ms",
        ]  # fmt: skip
        mrows = [
            [
                mode, str(m["submitted"]), str(m["completed"]), str(m["failed_explicitly"]),
                str(m["lost"]), str(m["duplicated"]), fmt(m["latency_p50_ms"], ".4g"),
                fmt(m["latency_p99_ms"], ".4g"), fmt(m["dispatch_p50_ms"], ".3g"),
                fmt(m["dispatch_p99_ms"], ".3g"),
            ]
            for mode, m in pb["modes"].items()
        ]  # fmt: skip
        r1, r2 = pb["pooled_over_direct"], pb["pooled_over_same_settings_direct"]
        lines += [
            *md_table_lines(mh, mrows),
            "",
            f"PgBouncer / direct latency: p50 {fmt(r1['latency_p50'], '.2f')}x, p99 "
            f"{fmt(r1['latency_p99'], '.2f')}x; against direct with the same settings: p50 "
            f"{fmt(r2['latency_p50'], '.2f')}x, p99 {fmt(r2['latency_p99'], '.2f')}x. "
            f"Behaviour holds (every call answered once): {_yes(pb['behaviour_holds'])}.",
            "",
        ]
        fl = pb.get("select1_floor")
        if fl:
            lines += [
                f"The hop alone (`SELECT 1` on one connection, no prepared statements, best of 3): "
                f"direct {fmt(fl['direct_ms_per_query'], '.3g')} ms, through PgBouncer "
                f"{fmt(fl['pgbouncer_ms_per_query'], '.3g')} ms.",
                "",
            ]
        stats = [r for r in pb["runs"] if r.get("pgbouncer_stats")]
        if stats:
            lines += [
                "PgBouncer's own averages per pooled run (SHOW STATS, ms): "
                + "; ".join(
                    f"round {r['round'] + 1}: transaction "
                    f"{fmt(r['pgbouncer_stats'].get('avg_xact_time', float('nan')) / 1000, '.3g')}"
                    f", query {fmt(r['pgbouncer_stats'].get('avg_query_time', float('nan')) / 1000, '.3g')}"  # noqa: E501
                    f", client wait {fmt(r['pgbouncer_stats'].get('avg_wait_time', float('nan')) / 1000, '.3g')}"  # noqa: E501
                    for r in stats
                ),
                "",
            ]
    return "\n".join(lines)


def plot(p: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    es = p.get("engines_scaling") or {"cells": []}
    panels = (
        ("cpu_per_decision_ms", "scheduler CPU per decision (ms)"),
        ("dispatch_p99_ms", "dispatch p99, accept → start (ms)"),
        ("rows_written_per_s", "Postgres rows written/s"),
    )
    for ax, (key, label) in zip(axes, panels, strict=True):
        for s in sorted({c["schedulers"] for c in es["cells"]}):
            cells = sorted(
                (c for c in es["cells"] if c["schedulers"] == s), key=lambda c: c["engines"]
            )
            ax.plot(
                [c["engines"] for c in cells], [c[key] for c in cells], "o-", label=f"{s} sched"
            )
        if key == "rows_written_per_s":
            for s in sorted({c["schedulers"] for c in es["cells"]})[:1]:
                cells = sorted(
                    (c for c in es["cells"] if c["schedulers"] == s), key=lambda c: c["engines"]
                )
                ax.plot(
                    [c["engines"] for c in cells],
                    [c["idle_rows_written_per_s"] for c in cells],
                    "k--",
                    label="idle (heartbeats)",
                )
        ax.set_xscale("log")
        ax.set_xlabel("engines (light identities)")
        ax.set_title(label, fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"autellix bench cluster: {p['banner']}", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def write_cluster(payload: dict[str, Any], out: Path) -> list[Path]:
    """cluster.json, cluster.md and cluster.png in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "cluster.json", out / "cluster.md", out / "cluster.png"]
    paths[0].write_text(json.dumps(payload, indent=2, default=str) + "\n")
    paths[1].write_text(markdown(payload))
    plot(payload, paths[2])
    return paths
