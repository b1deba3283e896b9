"""`bench overhead --policies A,B,...`: what a policy's decision costs one scheduler replica.

A policy's rank is computed for every call a scheduler decides, so its cost shows up as fewer
decisions per second. This measures it the way `bench overhead` measures decisions/s — a burst
of one-token calls waits in JetStream, then one real scheduler replica starts and dispatches all
of them to a nearly idle SIMULATED engine; the rate is read from Postgres' `dispatched_at` — once
per policy per round, on a fresh deployment each time, with the policies' order rotated from
round to round (A, B; B, A; ...) so a drift of the host lands on all of them alike. The burst's
programs carry `autellix.class` labels, so a class-aware policy (gittins) looks its index up per
class, as it does in production.

The idle engine never runs a call, so every call waits: a policy that issues calls below the top
queue (gittins does, by index) gives the anti-starvation pass real work (rows to read, promotions
and their Controls) that a policy issuing every fresh call at the top (atlas) does not. That is
part of what the policy costs; `--scheduler-arg --beta --scheduler-arg none` turns the pass off
for both, leaving the rank computation (the index lookup) alone.

Reported per policy: decisions/s per round and their mean, min and max, the scheduler's CPU per
decision, and each policy's rate over the first policy's (per round, and of the means): a ratio
of 0.95 is a 5 % cost.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from autellix.bench.overhead import OverheadConfig, decisions_per_second
from autellix.bench.repeats import rotated
from autellix.bench.reporting import command_line, fmt, load_avg, machine, md_table_lines
from autellix.bench.stack import Infra


@dataclass
class PolicyCostConfig:
    policies: tuple[str, ...] = ("atlas", "gittins")
    rounds: int = 3
    burst: int = 3000
    burst_programs: int = 100
    classes: int = 4
    scheduler_args: tuple[str, ...] = ()  # e.g. ("--beta", "none"): the lookup alone
    log_dir: Path | None = None


def summarize(policies: tuple[str, ...], runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per policy: decisions/s (mean, min, max, per round), CPU per decision, and the ratio of
    its rate to the first policy's, of the means and per round."""
    per: dict[str, Any] = {}
    for r in runs:  # a burst dispatched in one transaction has no span to time a rate over
        if not math.isfinite(r.get("decisions_per_s", float("nan"))):
            raise ValueError(
                f"round {r.get('round')} of {r['policy']}: {r.get('dispatched')} calls dispatched "
                f"within {r.get('dispatch_span_s', 0):g} s cannot be timed; use a larger --burst"
            )
    for pol in policies:
        rates = [r["decisions_per_s"] for r in runs if r["policy"] == pol]
        cpu = [r["cpu_ms_per_decision"].get("scheduler") for r in runs if r["policy"] == pol]
        per[pol] = {
            "decisions_per_s": statistics.fmean(rates),
            "decisions_per_s_min": min(rates),
            "decisions_per_s_max": max(rates),
            "decisions_per_s_per_round": rates,
            "scheduler_cpu_ms_per_decision": statistics.fmean(c for c in cpu if c is not None)
            if any(c is not None for c in cpu)
            else None,
        }
    base = policies[0]
    for pol in policies:
        per_round = [
            a / b
            for a, b in zip(
                per[pol]["decisions_per_s_per_round"],
                per[base]["decisions_per_s_per_round"],
                strict=True,
            )
        ]
        per[pol]["over_first"] = {
            "of_means": per[pol]["decisions_per_s"] / per[base]["decisions_per_s"],
            "per_round": per_round,
            "min": min(per_round),
            "max": max(per_round),
        }
    return per


async def run_policy_cost(
    cfg: PolicyCostConfig, *, nats_url: str | None = None, database_url: str | None = None
) -> dict[str, Any]:
    """Every (round, policy) burst; the results.json payload."""
    if len(cfg.policies) < 2 or len(set(cfg.policies)) != len(cfg.policies):
        raise ValueError("--policies wants two or more distinct policies")
    load0, t0 = load_avg(), time.perf_counter()
    ocfg = OverheadConfig(
        burst=cfg.burst,
        burst_programs=cfg.burst_programs,
        burst_classes=cfg.classes,
        scheduler_args=cfg.scheduler_args,
        log_dir=cfg.log_dir,
        compare_direct=False,
    )
    runs: list[dict[str, Any]] = []
    async with Infra(nats_url, database_url) as infra:
        for rnd in range(cfg.rounds):
            for pol in rotated(list(cfg.policies), rnd):
                res = await decisions_per_second(infra, ocfg, policy=pol)
                if "decisions_per_s" not in res:
                    raise RuntimeError(f"{pol}: the burst was not dispatched ({res})")
                runs.append({"round": rnd, **res})
        servers = infra.describe()
    result: dict[str, Any] = {
        "simulated_engine": "idle SIMULATED engine (batch 1, 1-hour step): it only takes "
        "Dispatches",
        "config": {**asdict(cfg), "log_dir": str(cfg.log_dir) if cfg.log_dir else None},
        "runs": runs,
        "policies": summarize(cfg.policies, runs),
        "meta": {
            "servers": servers,
            "machine": machine(),
            "load_avg_start": load0,
            "load_avg_end": load_avg(),
            "wall_s": time.perf_counter() - t0,
            "command": command_line(),
        },
    }
    result["summary"] = summary_lines(result)
    return result


def summary_lines(r: dict[str, Any]) -> list[str]:
    pols = list(r["policies"])
    base = pols[0]
    out = []
    for pol in pols:
        d = r["policies"][pol]
        o = d["over_first"]
        out.append(
            f"{pol}: {d['decisions_per_s']:.0f} decisions/s (rounds "
            f"{d['decisions_per_s_min']:.0f}-{d['decisions_per_s_max']:.0f})"
            + (
                ""
                if pol == base
                else f", {o['of_means']:.3f}x {base}'s (per round {o['min']:.3f}-{o['max']:.3f})"
            )
        )
    return out


def markdown(r: dict[str, Any]) -> str:
    cfg, meta = r["config"], r["meta"]
    pols = list(r["policies"])
    header = [
        "policy",
        "decisions/s (mean)",
        "min-max over rounds",
        f"/ {pols[0]} (of means)",
        "per round min-max",
        "scheduler CPU ms/decision",
    ]
    rows = []
    for pol in pols:
        d = r["policies"][pol]
        o = d["over_first"]
        rows.append(
            [
                pol,
                f"{d['decisions_per_s']:.0f}",
                f"{d['decisions_per_s_min']:.0f}-{d['decisions_per_s_max']:.0f}",
                f"{o['of_means']:.3f}",
                f"{o['min']:.3f}-{o['max']:.3f}",
                fmt(d["scheduler_cpu_ms_per_decision"], ".3f"),
            ]
        )
    lines = [
        "# Decision cost per policy: one scheduler replica's decisions/s (SIMULATED engine)",
        "",
        f"{cfg['rounds']} rounds; in each, every policy once (order rotated per round) on a fresh "
        f"deployment: {cfg['burst']} one-token calls of {cfg['burst_programs']} programs "
        f"({cfg['classes']} `autellix.class` labels) queued, then one scheduler replica "
        + (f"(flags `{' '.join(cfg['scheduler_args'])}`) " if cfg["scheduler_args"] else "")
        + "dispatches them to an idle SIMULATED engine; decisions/s from Postgres' dispatched_at. "
        f"Host {meta['machine']}, load average {meta['load_avg_start']:.2f} -> "
        f"{meta['load_avg_end']:.2f}, {meta['wall_s']:.0f} s wall.",
        "",
        f"Command: `{meta['command']}`",
        "",
        *md_table_lines(header, rows),
        "",
    ]
    return "\n".join(lines)


def plot(r: dict[str, Any], path: Path) -> None:
    """Decisions/s of every round per policy, with each policy's mean."""
    from autellix.bench.reporting import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, d in enumerate(r["policies"].values()):
        ys = d["decisions_per_s_per_round"]
        ax.plot([i] * len(ys), ys, "o", alpha=0.7)
        ax.hlines(d["decisions_per_s"], i - 0.25, i + 0.25, color="black")
    ax.set_xticks(range(len(r["policies"])), list(r["policies"]))
    ax.set_ylabel("decisions/s (one scheduler replica)")
    ax.set_ylim(bottom=0)
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_title("decision cost per policy (SIMULATED engine)")
    fig.tight_layout()
    save_figure(fig, path)


def write_policy_cost(result: dict[str, Any], out: Path) -> list[Path]:
    """results.json, policies.md and policies.png in `out`."""
    from autellix.bench.reporting import write_report_files

    paths = write_report_files(
        out, result, png="policies.png", md="policies.md", plot=plot, markdown=markdown
    )
    return list(paths.values())
