"""`bench overhead --dashboard-browsers N`: what an open `/ui` dashboard costs the hot path.

The dashboard promises to cost the deployment nothing measurable: one reader per frontend polls
Postgres once per `poll_s` and fans the same bytes out to every browser (`ui_feed.py`). This
checks the promise the only way that counts, side by side on one deployment: rounds of the same
sequential one-token calls as `bench overhead` (zero-work SIMULATED engine), alternately with no
browser connected ("closed") and with N server-sent-event clients reading `/ui/api/events`
("open"), each client a process of its own as a browser is (`sse_reader.py`), so the clients'
parsing runs beside the deployment, not on the measuring loop. The order inside each pair of
rounds rotates (closed-open, open-closed, ...), so a drift of the host over the run lands on
both settings alike. Every round has the same number of calls.

Reported: per-round and pooled p50/p90/p99 per setting, CPU per call per process, the ratio
open/closed pooled and per pair (its min-max is the round-to-round spread), the closed rounds'
own p50 spread (the noise floor of this host), and the sizes of the snapshots the clients got.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import statistics
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autellix.bench.overhead import ZERO_WORK, _stats_ms, cpu_per_call_ms, cpu_snapshot
from autellix.bench.reporting import command_line, fmt, load_avg, machine, md_table_lines
from autellix.bench.stack import Infra, run_stack

MODES = ("closed", "open")
EVENTS_PATH = "/ui/api/events"


@dataclass
class DashboardConfig:
    calls: int = 400  # per round
    warmup: int = 20
    rounds: int = 4  # per setting: 2 x rounds rounds in all
    browsers: int = 1
    settle_s: float = 1.5  # between rounds: the feed's reader stops, the host calms down
    first_snapshot_timeout_s: float = 30.0
    log_dir: Path | None = None


def free_port() -> int:
    """A TCP port nothing listens on now, for the frontend's HTTP API."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def round_order(rounds: int) -> list[str]:
    """`rounds` of each setting in pairs whose order rotates: closed, open, open, closed, ..."""
    out: list[str] = []
    for i in range(rounds):
        out += list(MODES if i % 2 == 0 else reversed(MODES))
    return out


Event = tuple[str, int]  # ("snapshot" | "delta", its size in bytes)


async def _browser(url: str, sizes: list[Event], poll_s: list[float]) -> None:
    """One dashboard tab, in a process of its own as a browser's would be (`sse_reader.py`):
    record each event's kind and size in bytes until cancelled."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "autellix.bench.sse_reader", url, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            kind, _, value = raw.decode().strip().partition(" ")
            if kind in ("snapshot", "delta"):
                sizes.append((kind, int(value)))
            elif kind == "hello":
                poll_s.append(float(value))
        code = await proc.wait()
        raise RuntimeError(f"dashboard reader ended (exit {code}) while the round ran")
    finally:
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()


@contextlib.asynccontextmanager
async def _open_dashboard(
    url: str, cfg: DashboardConfig, sizes: list[Event], poll_s: list[float]
) -> Any:
    """`cfg.browsers` stream clients, yielded once every one has its first snapshot."""
    per: list[list[Event]] = [[] for _ in range(cfg.browsers)]
    tasks = [asyncio.create_task(_browser(url, got, poll_s)) for got in per]
    try:
        deadline = time.monotonic() + cfg.first_snapshot_timeout_s
        while not all(per):
            for t in tasks:
                if t.done():
                    t.result()  # a client that failed: its error, not a silent open round
            if time.monotonic() > deadline:
                raise TimeoutError(f"no dashboard snapshot within {cfg.first_snapshot_timeout_s}s")
            await asyncio.sleep(0.05)
        yield
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        sizes += [n for got in per for n in got]


async def _round(prog: Any, calls: int) -> tuple[list[float], dict[str, float]]:
    """`calls` sequential one-token calls: their latencies and the CPU per call per process."""
    cpu0 = cpu_snapshot()
    lat: list[float] = []
    for i in range(calls):
        res = await prog.call(
            prompt_token_ids=[100 + i % 1000],
            max_tokens=1,
            sampling={"ignore_eos": True, "temperature": 0.0},
        )
        lat.append(res.latency_s)
    return lat, cpu_per_call_ms(cpu0, cpu_snapshot(), calls)


async def measure_dashboard(infra: Infra, cfg: DashboardConfig) -> dict[str, Any]:
    """The alternating rounds on one fresh deployment whose frontend serves HTTP."""
    from autellix.client import Client

    port = free_port()
    rounds: list[dict[str, Any]] = []
    sizes: list[Event] = []
    poll_s: list[float] = []
    async with run_stack(
        infra, policy="fcfs", timing=ZERO_WORK, log_dir=cfg.log_dir, http_port=port
    ) as rs:
        url = f"http://127.0.0.1:{port}{EVENTS_PATH}"
        async with Client(rs.settings.nats_url, namespace=rs.settings.namespace) as client:
            async with client.program(f"dashboard-{uuid.uuid4().hex[:8]}") as prog:
                await _round(prog, cfg.warmup)
                for index, mode in enumerate(round_order(cfg.rounds)):
                    got: list[Event] = []
                    if mode == "open":
                        async with _open_dashboard(url, cfg, got, poll_s):
                            lat, cpu = await _round(prog, cfg.calls)
                    else:
                        lat, cpu = await _round(prog, cfg.calls)
                    sizes += got
                    rounds.append(
                        {"round": index, "mode": mode, **_stats_ms(lat), "calls": len(lat),
                         "cpu_ms_per_call": cpu, "snapshots": len(got), "latencies_s": lat}
                    )  # fmt: skip
                    await asyncio.sleep(cfg.settle_s)
    return summarize(rounds, sizes, poll_s[0] if poll_s else None)


def summarize(
    rounds: list[dict[str, Any]], events: list[Event], poll_s: float | None
) -> dict[str, Any]:
    """Pooled statistics per setting, the open/closed ratios and their spread across pairs."""
    pooled: dict[str, Any] = {}
    for mode in MODES:
        runs = [r for r in rounds if r["mode"] == mode]
        lat = [x for r in runs for x in r["latencies_s"]]
        cpus = [r["cpu_ms_per_call"] for r in runs]
        pooled[mode] = {
            **_stats_ms(lat),
            "calls": len(lat),
            "p50_ms_per_round": [r["p50_ms"] for r in runs],
            "p99_ms_per_round": [r["p99_ms"] for r in runs],
            "cpu_ms_per_call": {k: statistics.fmean(c[k] for c in cpus) for k in cpus[0]},
        }
    closed, opened = pooled["closed"], pooled["open"]
    pairs = [rounds[i : i + 2] for i in range(0, len(rounds) - 1, 2)]
    ratio: dict[str, Any] = {}
    for key in ("p50_ms", "p90_ms", "p99_ms"):
        per_pair = [
            next(r for r in p if r["mode"] == "open")[key]
            / next(r for r in p if r["mode"] == "closed")[key]
            for p in pairs
        ]
        ratio[key.removesuffix("_ms")] = {
            "pooled": opened[key] / closed[key],
            "per_pair": per_pair,
            "min": min(per_pair),
            "max": max(per_pair),
        }
    ratio["cpu_per_call"] = opened["cpu_ms_per_call"]["total"] / closed["cpu_ms_per_call"]["total"]
    ratio["frontend_cpu_per_call"] = opened["cpu_ms_per_call"]["frontend"] / max(
        1e-9, closed["cpu_ms_per_call"]["frontend"]
    )
    closed_p50 = closed["p50_ms_per_round"]
    noise = {
        "closed_p50_ms_min": min(closed_p50),
        "closed_p50_ms_max": max(closed_p50),
        # the pooled open p50 inside the range the closed rounds spanned by themselves, and the
        # pairs' ratios on both sides of 1: the difference is no larger than the host's noise
        "p50_within_closed_range": min(closed_p50) <= opened["p50_ms"] <= max(closed_p50),
        "p50_pairs_straddle_1": ratio["p50"]["min"] <= 1.0 <= ratio["p50"]["max"],
        "p99_pairs_straddle_1": ratio["p99"]["min"] <= 1.0 <= ratio["p99"]["max"],
    }
    for r in rounds:
        r.pop("latencies_s")
    return {
        "rounds": rounds,
        "closed": closed,
        "open": opened,
        "open_over_closed": ratio,
        "noise": noise,
        "snapshots": {**_sizes([n for k, n in events if k == "snapshot"]), "poll_s": poll_s},
        "deltas": _sizes([n for k, n in events if k == "delta"]),
    }


def _sizes(sizes: list[int]) -> dict[str, Any]:
    return {
        "count": len(sizes),
        "bytes_median": statistics.median(sizes) if sizes else None,
        "bytes_min": min(sizes) if sizes else None,
        "bytes_max": max(sizes) if sizes else None,
    }


async def run_dashboard_overhead(
    cfg: DashboardConfig, *, nats_url: str | None = None, database_url: str | None = None
) -> dict[str, Any]:
    """The whole comparison; the results.json payload."""
    load0, t0 = load_avg(), time.perf_counter()
    async with Infra(nats_url, database_url) as infra:
        result = await measure_dashboard(infra, cfg)
        servers = infra.describe()
    result["config"] = {
        "calls_per_round": cfg.calls,
        "warmup": cfg.warmup,
        "rounds_per_setting": cfg.rounds,
        "browsers": cfg.browsers,
        "settle_s": cfg.settle_s,
        "engine": "zero-work SIMULATED engine (sim backend, 0 s steps, 1 output token)",
    }
    result["meta"] = {
        "servers": servers,
        "machine": machine(),
        "nice": os.nice(0),
        "load_avg_start": load0,
        "load_avg_end": load_avg(),
        "wall_s": time.perf_counter() - t0,
        "command": command_line(),
    }
    result["summary"] = summary_lines(result)
    return result


def summary_lines(r: dict[str, Any]) -> list[str]:
    c, o, x, s = r["closed"], r["open"], r["open_over_closed"], r["snapshots"]
    d = r.get("deltas") or _sizes([])
    n, cfg = r["noise"], r["config"]
    verdict = "within" if n["p50_pairs_straddle_1"] and n["p50_within_closed_range"] else "OUTSIDE"
    return [
        f"dashboard closed vs open ({cfg['browsers']} browser(s)), {cfg['rounds_per_setting']} "
        f"rounds each of {cfg['calls_per_round']} sequential 1-token calls, rotated order",
        f"  closed: p50 {c['p50_ms']:.2f} / p90 {c['p90_ms']:.2f} / p99 {c['p99_ms']:.2f} ms, "
        f"CPU {c['cpu_ms_per_call']['total']:.2f} ms/call",
        f"  open:   p50 {o['p50_ms']:.2f} / p90 {o['p90_ms']:.2f} / p99 {o['p99_ms']:.2f} ms, "
        f"CPU {o['cpu_ms_per_call']['total']:.2f} ms/call",
        f"  open/closed: p50 {x['p50']['pooled']:.3f}x (pairs {x['p50']['min']:.3f}-"
        f"{x['p50']['max']:.3f}), p99 {x['p99']['pooled']:.3f}x (pairs {x['p99']['min']:.3f}-"
        f"{x['p99']['max']:.3f}), CPU {x['cpu_per_call']:.3f}x, frontend CPU "
        f"{x['frontend_cpu_per_call']:.3f}x",
        f"  closed rounds' own p50 range {n['closed_p50_ms_min']:.2f}-"
        f"{n['closed_p50_ms_max']:.2f} ms: p50 difference {verdict} noise",
        f"  events every {fmt(s['poll_s'], 'g')} s: {s['count']} whole snapshots (median "
        f"{fmt(s['bytes_median'], '.0f')} bytes, max {fmt(s['bytes_max'], '.0f')}), "
        f"{d['count']} deltas (median {fmt(d['bytes_median'], '.0f')} bytes, max "
        f"{fmt(d['bytes_max'], '.0f')})",
        f"load average {r['meta']['load_avg_start']:.2f} -> {r['meta']['load_avg_end']:.2f}",
    ]


def markdown(r: dict[str, Any]) -> str:
    """The report: the summary, then per-round and pooled tables."""
    header = ["round", "setting", "calls", "p50 ms", "p90 ms", "p99 ms", "CPU ms/call",
              "frontend CPU ms/call", "snapshots"]  # fmt: skip

    def row(name: str, mode: str, d: dict[str, Any], snaps: str) -> list[str]:
        cpu = d["cpu_ms_per_call"]
        return [name, mode, str(d["calls"]), fmt(d["p50_ms"], ".2f"), fmt(d["p90_ms"], ".2f"),
                fmt(d["p99_ms"], ".2f"), fmt(cpu["total"], ".2f"), fmt(cpu["frontend"], ".3f"),
                snaps]  # fmt: skip

    rows = [row(str(x["round"]), x["mode"], x, str(x["snapshots"])) for x in r["rounds"]]
    rows += [row("pooled", m, r[m], "") for m in MODES]
    x = r["open_over_closed"]
    ratio_rows = [
        [k, fmt(x[k]["pooled"], ".3f"), ", ".join(f"{v:.3f}" for v in x[k]["per_pair"])]
        for k in ("p50", "p90", "p99")
    ]
    lines = [
        "# Dashboard open vs closed: per-call latency (zero-work SIMULATED engine)",
        "",
        "```",
        r["meta"]["command"],
        "```",
        "",
        *[f"    {line}" for line in r["summary"]],
        "",
        *md_table_lines(header, rows),
        "",
        "open / closed per pair of rounds:",
        "",
        *md_table_lines(["percentile", "pooled", "per pair"], ratio_rows),
        "",
    ]
    return "\n".join(lines)


def plot(r: dict[str, Any], path: Path) -> None:
    """p50 and p99 of every round in run order, closed and open in two colours."""
    from autellix.bench.reporting import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    colours = {"closed": "tab:blue", "open": "tab:orange"}
    for ax, key in zip(axes, ("p50_ms", "p99_ms"), strict=True):
        for mode in MODES:
            pts = [(x["round"], x[key]) for x in r["rounds"] if x["mode"] == mode]
            ax.plot(*zip(*pts, strict=True), "o", color=colours[mode], label=mode)
            ax.axhline(r[mode][key], color=colours[mode], alpha=0.4, label=f"{mode} pooled")
        ax.set_xlabel("round (run order)")
        ax.set_ylabel(f"{key.removesuffix('_ms')} latency (ms)")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"dashboard closed vs open ({r['config']['browsers']} browser(s)), SIMULATED")
    fig.tight_layout()
    save_figure(fig, path)


def write_dashboard(result: dict[str, Any], out: Path) -> list[Path]:
    """results.json, dashboard.md and dashboard.png in `out`."""
    from autellix.bench.reporting import write_report_files

    paths = write_report_files(
        out, result, png="dashboard.png", md="dashboard.md", plot=plot, markdown=markdown
    )
    return list(paths.values())
