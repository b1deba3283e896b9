"""`bench overhead`: what the control plane costs, measured with a zero-work SIMULATED engine.

1. **Per-call latency** (p50/p99): one client makes `calls` sequential one-token calls through
   frontend → scheduler → Postgres → engine → client (the two inner hops direct, over core
   NATS, with JetStream as the fallback: `transport.direct`), on an engine whose steps take no
   time, so the whole latency is control-plane overhead. The services' own
   timestamps (accepted, dispatched, started, finished) split it into stages, and the client's
   wall clock splits the first stage into client → frontend and finish → client (`hops_ms_*`).
   `started` is when the engine began the run (it records starts after the fact, backdated).
2. **Decisions per second of one scheduler replica**: a stack without schedulers accepts a
   burst of `burst` calls (they wait in JetStream), then one scheduler replica starts and
   dispatches them all; the rate is read from the calls' `dispatched_at` in Postgres. The engine
   of that stack is made nearly idle (batch 1, a step of an hour), so it only acks dispatches and
   takes little CPU from the scheduler being measured.

With `compare_direct`, the sequential measurement runs in alternating rounds with direct hops
on (the default deployment) and off (every call through both JetStream queues), and reports
both side by side (`direct_vs_jetstream`: p50, p99, CPU per call and their ratios).

Optionally `py-spy` samples the scheduler during the burst (`py_spy_out`: collapsed stacks,
summarized into the share of samples per module family).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from autellix.bench.engine import SimEngineTiming
from autellix.bench.reporting import load_avg, pct
from autellix.bench.stack import Infra, run_stack
from autellix.runtime.settings import asyncpg_dsn

TARGETS = {"p50_ms": 2.0, "p99_ms": 10.0, "decisions_per_s": 5000.0}


@dataclass
class OverheadConfig:
    calls: int = 500
    warmup: int = 20
    burst: int = 5000
    burst_programs: int = 100
    submit_concurrency: int = 128
    scheduler_concurrency: int | None = None
    burst_timeout_s: float = 300.0
    #: burst programs carry `autellix.class` c0..c{n-1} (0: none), so a class-aware policy
    #: (gittins) looks its index up per class as it would in production
    burst_classes: int = 0
    scheduler_args: tuple[str, ...] = ()  # more flags for the burst's scheduler replica
    py_spy_out: Path | None = None  # collapsed stacks of the scheduler
    log_dir: Path | None = None
    compare_direct: bool = True  # also measure with direct hops off, in alternating rounds
    rounds: int = 2  # rounds per setting when comparing


ZERO_WORK = SimEngineTiming(
    step_s=0.0, max_batch=64, delta_interval_s=0.02, source="zero-work engine"
)
IDLE = SimEngineTiming(
    step_s=3600.0,
    max_batch=1,
    source="idle engine (batch 1, 1-hour step)",
    extra_args=("--drain-timeout", "1"),
)


_COMPONENTS = (
    ("frontend", "autellix.services.frontend"),
    ("scheduler", "autellix.services.scheduler"),
    ("engine", "autellix.services.engine"),
    ("nats-server", "nats-server"),
    ("postgres", "postgres"),
)


def cpu_snapshot() -> dict[str, float]:
    """CPU seconds (user + system) used so far by this process ("client") and by each kind of
    child process: the services, and NATS/Postgres when they are our embedded children.

    Differences of two snapshots around N calls give CPU per call per component: where the
    control plane spends its time, independent of how the two cores were shared.
    """
    import psutil

    me = psutil.Process()
    out = dict.fromkeys(["client", *(c for c, _ in _COMPONENTS)], 0.0)
    t = me.cpu_times()
    out["client"] = t.user + t.system
    for child in me.children(recursive=True):
        try:
            cmd = " ".join(child.cmdline())
            t = child.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        for name, key in _COMPONENTS:
            if key in cmd:
                out[name] += t.user + t.system
                break
    return out


def cpu_per_call_ms(before: dict[str, float], after: dict[str, float], n: int) -> dict[str, float]:
    per = {k: (after[k] - before[k]) * 1000 / max(1, n) for k in before}
    per["total"] = sum(per.values())
    return per


def _stats_ms(xs: list[float]) -> dict[str, float]:
    return {
        "p50_ms": pct(xs, 50) * 1000,
        "p90_ms": pct(xs, 90) * 1000,
        "p99_ms": pct(xs, 99) * 1000,
        "mean_ms": statistics.fmean(xs) * 1000 if xs else float("nan"),
        "max_ms": max(xs) * 1000 if xs else float("nan"),
    }


@contextlib.contextmanager
def _direct_hops(on: bool) -> Any:
    """Services started inside see `AUTELLIX_DIRECT_HOPS` on or off."""
    from autellix.transport.direct import ENV_DIRECT

    old = os.environ.get(ENV_DIRECT)
    os.environ[ENV_DIRECT] = "on" if on else "off"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(ENV_DIRECT, None)
        else:
            os.environ[ENV_DIRECT] = old


async def compare_direct(infra: Infra, cfg: OverheadConfig) -> dict[str, Any]:
    """Alternating rounds (on, off, on, off, ...) of `sequential_latency`, pooled per setting."""
    pooled: dict[str, list[dict[str, Any]]] = {"direct": [], "jetstream": []}
    for _ in range(cfg.rounds):
        for name, on in (("direct", True), ("jetstream", False)):
            with _direct_hops(on):
                pooled[name].append(await sequential_latency(infra, cfg))
    out: dict[str, Any] = {"rounds": cfg.rounds, "calls_per_round": cfg.calls}
    for name, runs in pooled.items():
        lat = [x for r in runs for x in r.pop("latencies_s")]
        cpu = [r["cpu_ms_per_call"] for r in runs]
        out[name] = {
            **_stats_ms(lat),
            "calls": len(lat),
            "p50_ms_per_round": [r["p50_ms"] for r in runs],
            "cpu_ms_per_call": {k: statistics.fmean(c[k] for c in cpu) for k in cpu[0]},
        }
    d, j = out["direct"], out["jetstream"]
    out["jetstream_over_direct"] = {
        "p50": j["p50_ms"] / d["p50_ms"],
        "p99": j["p99_ms"] / d["p99_ms"],
        "cpu_per_call": j["cpu_ms_per_call"]["total"] / d["cpu_ms_per_call"]["total"],
        "nats_cpu_per_call": j["cpu_ms_per_call"]["nats-server"]
        / max(1e-9, d["cpu_ms_per_call"]["nats-server"]),
    }
    return out


async def sequential_latency(infra: Infra, cfg: OverheadConfig) -> dict[str, Any]:
    """Per-call latency of one-token calls on a zero-work engine, with a per-stage split."""
    from autellix.client import Client

    scheduler_args = []
    if cfg.scheduler_concurrency:
        scheduler_args = ["--concurrency", str(cfg.scheduler_concurrency)]
    async with run_stack(
        infra,
        policy="fcfs",
        timing=ZERO_WORK,
        extra_scheduler_args=scheduler_args,
        log_dir=cfg.log_dir,
    ) as rs:
        async with Client(rs.settings.nats_url, namespace=rs.settings.namespace) as client:
            total: list[float] = []
            stages: dict[str, list[float]] = {
                "client_to_accepted_and_final_back": [],
                "accepted_to_dispatched": [],
                "dispatched_to_started": [],
                "started_to_finished": [],
            }
            # the first stage split by the client's wall clock (same machine as the services):
            # submit -> the frontend's insert began, and the engine's finish -> the client has it
            hops: dict[str, list[float]] = {"client_to_frontend": [], "finish_to_client": []}
            cpu0: dict[str, float] = {}
            async with client.program(f"overhead-{uuid.uuid4().hex[:8]}") as prog:
                for i in range(cfg.calls + cfg.warmup):
                    if i == cfg.warmup:
                        cpu0 = cpu_snapshot()
                    submitted = time.time()
                    res = await prog.call(
                        prompt_token_ids=[100 + i % 1000],
                        max_tokens=1,
                        sampling={"ignore_eos": True, "temperature": 0.0},
                    )
                    if i < cfg.warmup:
                        continue
                    total.append(res.latency_s)
                    t = res.timing
                    hops["client_to_frontend"].append(t.accepted_at.timestamp() - submitted)
                    hops["finish_to_client"].append(
                        submitted + res.latency_s - t.finished_at.timestamp()
                    )
                    if t.dispatched_at and t.started_at:
                        server = (t.finished_at - t.accepted_at).total_seconds()
                        stages["client_to_accepted_and_final_back"].append(
                            max(0.0, res.latency_s - server)
                        )
                        stages["accepted_to_dispatched"].append(
                            (t.dispatched_at - t.accepted_at).total_seconds()
                        )
                        stages["dispatched_to_started"].append(
                            (t.started_at - t.dispatched_at).total_seconds()
                        )
                        stages["started_to_finished"].append(
                            (t.finished_at - t.started_at).total_seconds()
                        )
            cpu = cpu_per_call_ms(cpu0, cpu_snapshot(), len(total)) if cpu0 else {}
    return {
        "calls": len(total),
        **_stats_ms(total),
        "stages_ms_p50": {k: pct(v, 50) * 1000 for k, v in stages.items()},
        "stages_ms_p99": {k: pct(v, 99) * 1000 for k, v in stages.items()},
        "hops_ms_p50": {k: pct(v, 50) * 1000 for k, v in hops.items()},
        "hops_ms_p99": {k: pct(v, 99) * 1000 for k, v in hops.items()},
        "cpu_ms_per_call": cpu,
        "latencies_s": total,
    }


async def _submit_burst(nats_url: str, namespace: str, cfg: OverheadConfig) -> float:
    """Submit `cfg.burst` one-token calls and wait until every one was accepted; seconds taken."""
    import nats

    from autellix.wire.protocol import (
        CALL_REPLY,
        CallAccepted,
        CallRequest,
        SamplingParams,
        Subjects,
        encode,
    )

    subjects = Subjects(namespace)
    nc = await nats.connect(nats_url)
    sem = asyncio.Semaphore(cfg.submit_concurrency)
    run = uuid.uuid4().hex[:8]
    failures: list[str] = []

    async def one(i: int) -> None:
        req = CallRequest(
            program_id=f"burst-{run}-{i % cfg.burst_programs}",
            thread_id="t0",
            prompt_token_ids=[100 + i % 1000],
            sampling=SamplingParams(max_tokens=1, ignore_eos=True, temperature=0.0),
            metadata={"autellix.class": f"c{i % cfg.burst_programs % cfg.burst_classes}"}
            if cfg.burst_classes
            else {},
        )
        async with sem:
            for _attempt in range(5):
                try:
                    msg = await nc.request(subjects.submit, encode(req), timeout=30)
                except Exception as exc:  # timeouts under a burst: retry, the id is new
                    failures.append(repr(exc))
                    continue
                if isinstance(CALL_REPLY.validate_json(msg.data), CallAccepted):
                    return
            raise RuntimeError(f"call {i} not accepted: {failures[-3:]}")

    t0 = time.monotonic()
    try:
        await asyncio.gather(*(one(i) for i in range(cfg.burst)))
    finally:
        await nc.close()
    return time.monotonic() - t0


async def _dispatched(dsn: str) -> tuple[int, list[datetime]]:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        n = await conn.fetchval("SELECT count(*) FROM calls")
        rows = await conn.fetch(
            "SELECT dispatched_at FROM calls WHERE dispatched_at IS NOT NULL ORDER BY dispatched_at"
        )
    finally:
        await conn.close()
    return int(n), [r["dispatched_at"] for r in rows]


_FAMILIES = {
    "asyncpg (Postgres client)": ("asyncpg",),
    "nats-py (NATS client)": ("nats/",),
    "pydantic": ("pydantic",),
    "json": ("json/",),
    "asyncio/uvloop loop": ("asyncio/", "uvloop"),
    "telemetry / logging": ("telemetry", "structlog", "opentelemetry", "logging/"),
}


def collapsed_summary(raw: Path, top: int = 12) -> dict[str, Any]:
    """Where a process spent its CPU samples (py-spy raw collapsed stacks).

    `inclusive`: share of samples whose stack contains a frame of each module family (they
    overlap); `self_top`: the leaf frames (self time) with the largest shares.
    """
    total = 0
    inclusive = dict.fromkeys(_FAMILIES, 0)
    leaf: dict[str, int] = {}
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        try:
            n = int(count)
        except ValueError:
            continue
        total += n
        for fam, keys in _FAMILIES.items():
            if any(k in stack for k in keys):
                inclusive[fam] += n
        frame = stack.rsplit(";", 1)[-1]
        leaf[frame] = leaf.get(frame, 0) + n
    if not total:
        return {}
    return {
        "samples": total,
        "inclusive": {k: v / total for k, v in inclusive.items()},
        "self_top": [[f, n / total] for f, n in sorted(leaf.items(), key=lambda x: -x[1])[:top]],
    }


async def decisions_per_second(
    infra: Infra, cfg: OverheadConfig, policy: str = "fcfs"
) -> dict[str, Any]:
    """One scheduler replica (under `policy`) dispatching a burst already queued in JetStream."""
    from autellix.local.supervisor import ServiceSpec

    async with run_stack(
        infra,
        policy=policy,
        timing=IDLE,
        schedulers=0,
        log_dir=cfg.log_dir,
        extra_scheduler_args=list(cfg.scheduler_args),
    ) as rs:
        submit_s = await _submit_burst(rs.settings.nats_url, rs.settings.namespace, cfg)
        assert rs.settings.database_url is not None and rs.stack.group is not None
        dsn = asyncpg_dsn(rs.settings.database_url)
        accepted, _ = await _dispatched(dsn)
        args = list(rs.scheduler_args)
        if cfg.scheduler_concurrency:
            args += ["--concurrency", str(cfg.scheduler_concurrency)]
        argv = [sys.executable, "-m", "autellix.services.scheduler", "--replica", "bench-0", *args]
        child = rs.stack.group.start(
            ServiceSpec(
                "scheduler-0",
                argv,
                env=rs.settings.to_env(),
                ready_pattern=r'"event": "scheduler ready"',
            )
        )
        t_start = time.monotonic()
        # profile the dispatching, not the imports: wait for the ready line first
        with contextlib.suppress(Exception):
            await rs.stack.group.wait_ready_async("scheduler-0", timeout=120)
        spy: asyncio.subprocess.Process | None = None
        raw: Path | None = None
        if cfg.py_spy_out is not None and shutil.which("py-spy"):
            cfg.py_spy_out.parent.mkdir(parents=True, exist_ok=True)
            raw = cfg.py_spy_out
            spy = await asyncio.create_subprocess_exec(
                "py-spy", "record", "--pid", str(child.pid), "--rate", "200", "--format", "raw",
                "--output", str(raw), "--nonblocking",
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
        cpu0 = cpu_snapshot()
        _, early = await _dispatched(dsn)
        done: list[datetime] = []
        while time.monotonic() - t_start < cfg.burst_timeout_s:
            await asyncio.sleep(0.5)
            _, done = await _dispatched(dsn)
            if len(done) >= accepted:
                break
        cpu1 = cpu_snapshot()
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its output and exits
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(spy.wait(), 30)
    n = len(done)
    out: dict[str, Any] = {
        "policy": policy,
        "burst": cfg.burst,
        "accepted": accepted,
        "dispatched": n,
        "submit_s": submit_s,
        "accept_rate_per_s": accepted / submit_s if submit_s else None,
        # from the scheduler's ready line on; includes the idle engine pulling dispatches
        "cpu_ms_per_decision": cpu_per_call_ms(cpu0, cpu1, n - len(early)),
    }
    if n >= 2:
        span = (done[-1] - done[0]).total_seconds()
        out["dispatch_span_s"] = span
        out["decisions_per_s"] = (n - 1) / span if span > 0 else float("inf")
        lo, hi = int(0.1 * (n - 1)), int(0.9 * (n - 1))
        mid = (done[hi] - done[lo]).total_seconds()
        out["decisions_per_s_p10_p90"] = (hi - lo) / mid if mid > 0 else float("inf")
    if raw is not None and raw.exists():
        out["py_spy_raw"] = str(raw)
        out["py_spy"] = collapsed_summary(raw)
    return out


async def run_overhead(
    cfg: OverheadConfig, *, nats_url: str | None = None, database_url: str | None = None
) -> dict[str, Any]:
    """Both measurements; the overhead.json payload (with a human summary)."""
    load0 = load_avg()
    t0 = time.perf_counter()
    async with Infra(nats_url, database_url) as infra:
        seq = await sequential_latency(infra, cfg)
        seq.pop("latencies_s")
        ab = await compare_direct(infra, cfg) if cfg.compare_direct else None
        dps = await decisions_per_second(infra, cfg)
        servers = infra.describe()
    result: dict[str, Any] = {
        "p50_ms": seq["p50_ms"],
        "p99_ms": seq["p99_ms"],
        "decisions_per_s": dps.get("decisions_per_s", 0.0),
        "targets": TARGETS,
        "meets": {
            "p50_ms": seq["p50_ms"] <= TARGETS["p50_ms"],
            "p99_ms": seq["p99_ms"] <= TARGETS["p99_ms"],
            "decisions_per_s": dps.get("decisions_per_s", 0.0) >= TARGETS["decisions_per_s"],
        },
        "simulated_engine": "zero-work SIMULATED engine (sim backend, 0 s steps, 1 output token)",
        "sequential": seq,
        "direct_vs_jetstream": ab,
        "burst": dps,
        "meta": {
            "servers": servers,
            "pg_sync_commit": os.environ.get("AUTELLIX_PG_SYNC_COMMIT", "accept (default)"),
            "machine_cpus": os.cpu_count(),
            "nice": os.nice(0),
            "load_avg_start": load0,
            "load_avg_end": load_avg(),
            "wall_s": time.perf_counter() - t0,
            "command": " ".join(sys.argv),
        },
    }
    result["summary"] = summary_lines(result)
    return result


def summary_lines(r: dict[str, Any]) -> list[str]:
    seq, b = r["sequential"], r["burst"]
    ok = {True: "meets", False: "MISSES"}
    lines = [
        f"per-call control-plane latency ({seq['calls']} sequential 1-token calls, zero-work "
        f"SIMULATED engine): p50 {r['p50_ms']:.2f} ms ({ok[r['meets']['p50_ms']]} <= "
        f"{TARGETS['p50_ms']:g}), p99 {r['p99_ms']:.2f} ms ({ok[r['meets']['p99_ms']]} <= "
        f"{TARGETS['p99_ms']:g})",
        "  stages p50 (ms): " + ", ".join(f"{k} {v:.2f}" for k, v in seq["stages_ms_p50"].items()),
        "  of the first stage, p50 (ms): "
        + ", ".join(f"{k} {v:.2f}" for k, v in seq.get("hops_ms_p50", {}).items()),
        "  CPU per call (ms): "
        + ", ".join(f"{k} {v:.2f}" for k, v in seq.get("cpu_ms_per_call", {}).items()),
        *_ab_lines(r.get("direct_vs_jetstream")),
        f"one scheduler replica: {r['decisions_per_s']:.0f} decisions/s over "
        f"{b.get('dispatched', 0)} queued calls ({ok[r['meets']['decisions_per_s']]} >= "
        f"{TARGETS['decisions_per_s']:g}); p10-p90 {b.get('decisions_per_s_p10_p90', 0):.0f}/s; "
        f"frontend accepted the burst at {b.get('accept_rate_per_s') or 0:.0f} calls/s",
        "  CPU per decision (ms): "
        + ", ".join(f"{k} {v:.3f}" for k, v in b.get("cpu_ms_per_decision", {}).items()),
        f"load average {r['meta']['load_avg_start']:.2f} -> {r['meta']['load_avg_end']:.2f}",
    ]
    spy = b.get("py_spy") or {}
    if spy:
        lines.append(
            f"  scheduler CPU samples ({spy['samples']}) by module (inclusive): "
            + ", ".join(f"{k} {v:.0%}" for k, v in spy["inclusive"].items())
        )
        lines.append(
            "  top self time: " + "; ".join(f"{f} {v:.0%}" for f, v in spy["self_top"][:6])
        )
    return lines


def _ab_lines(ab: dict[str, Any] | None) -> list[str]:
    if not ab:
        return []
    d, j, x = ab["direct"], ab["jetstream"], ab["jetstream_over_direct"]
    return [
        f"side by side ({ab['rounds']} alternating rounds of {ab['calls_per_round']} calls each): "
        f"direct hops p50 {d['p50_ms']:.2f} / p99 {d['p99_ms']:.2f} ms, CPU "
        f"{d['cpu_ms_per_call']['total']:.2f} ms/call; JetStream only p50 {j['p50_ms']:.2f} / "
        f"p99 {j['p99_ms']:.2f} ms, CPU {j['cpu_ms_per_call']['total']:.2f} ms/call; "
        f"JetStream/direct: p50 {x['p50']:.2f}x, p99 {x['p99']:.2f}x, "
        f"CPU {x['cpu_per_call']:.2f}x, NATS CPU {x['nats_cpu_per_call']:.2f}x"
    ]


def write_overhead(result: dict[str, Any], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "overhead.json"
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return [path]
