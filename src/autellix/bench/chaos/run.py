"""One chaos run: a supervised stack of real service processes under load, one fault at a time.

The stack is `autellix up`'s (`autellix.local.stack.Stack` with its restart policy): an
embedded nats-server with a JetStream file store, an embedded Postgres, the frontend, scheduler
replicas and simulated engines, each a process. The load (`load.LoadDriver`) runs throughout;
for each fault the run observes `pre_s` seconds of steady load, SIGKILLs the part
(`faults.kill_and_wait`: the stack's restarter brings it back), and observes `post_s` seconds
after the kill. An optional soak follows (load only, each service's RSS sampled from /proc), then
the load stops with a bounded drain (the calls' deadline): every call still unanswered then is
lost. Last, the optional fuzz runs against the same stack (`autellix.bench.chaos_fuzz`).
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from autellix.bench.chaos.accounting import FaultWindow, classify, rate_series
from autellix.bench.chaos.faults import FAULTS, Kill, kill_and_wait, part_pid
from autellix.bench.chaos.load import LoadDriver
from autellix.bench.chaos.rss import tree_rss_mib
from autellix.bench.chaos.stored import stored_calls
from autellix.bench.chaos.wiretap import AnswerTap

__all__ = ["ChaosConfig", "run_chaos"]

Say = Callable[[str], None]


@dataclass
class ChaosConfig:
    """What to run; the defaults are the committed benchmark's."""

    programs: int = 8  # programs running at once (closed loop)
    faults: tuple[str, ...] = tuple(FAULTS)
    pre_s: float = 8.0  # steady load observed before each kill (the pre-fault rate)
    post_s: float = 20.0  # observed after each kill
    soak_minutes: float = 0.0
    fuzz_cases: int = 0
    call_timeout_s: float = 60.0  # a call's deadline: unanswered after it = lost
    engines: int = 2
    schedulers: int = 2
    max_batch: int = 8
    engine_args: tuple[str, ...] = ()
    scheduler_args: tuple[str, ...] = ()
    seed: int = 0
    log_dir: Path | None = None  # services' logs and supervisor.log (default: a temp dir)
    extra: dict[str, Any] = field(default_factory=dict)


async def _wait_completions(driver: LoadDriver, n: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while len(driver.completions()) < n and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.2)  # polled: the driver's records are plain lists


async def _soak(stack: Any, seconds: float, say: Say) -> list[dict[str, Any]]:
    """Sample each service's RSS every few seconds for `seconds` while the load runs."""
    parts = ["nats", "postgres", *stack.group.names]
    interval = max(1.0, min(10.0, seconds / 120))
    t0 = time.monotonic()
    samples = []
    while (now := time.monotonic()) - t0 < seconds:
        pids = {}
        for part in parts:
            try:
                pids[part] = part_pid(stack, part)
            except (AssertionError, KeyError):
                continue
        samples.append({"t": round(now - t0, 1), "rss_mib": tree_rss_mib(pids)})
        say(f"soak {now - t0:.0f}/{seconds:.0f}s")
        await asyncio.sleep(interval)
    return samples


async def _fuzz(stack: Any, cases: int, seed: int) -> dict[str, Any]:
    import nats

    from autellix.bench.chaos_fuzz import fuzz, still_serving

    nc = await nats.connect(stack.settings.nats_url, connect_timeout=5)
    try:
        report = await fuzz(nc, stack.subjects, stack.engine_ids[0], cases, rng_seed=seed)
        broken = await still_serving(nc, stack.subjects)
    finally:
        await nc.close()
    return {
        "summary": report.summary(),
        "per_subject": report.per_subject,
        "failures": report.failures,
        "still_serving": not broken,
        "not_serving": broken,
    }


async def run_chaos(cfg: ChaosConfig, say: Say = lambda _: None) -> dict[str, Any]:
    """Run every phase; return chaos.json's content (plus `series` for the plot)."""
    from autellix.client import Client
    from autellix.local.backoff import BackoffPolicy
    from autellix.local.stack import EngineConfig, Stack, StackConfig
    from autellix.local.temp_dirs import make_temp_dir
    from autellix.runtime.settings import Settings

    base = make_temp_dir("autellix-chaos-")
    log_dir = cfg.log_dir or base / "logs"
    config = StackConfig(
        engines=[
            EngineConfig("sim", cfg.max_batch, extra_args=cfg.engine_args)
            for _ in range(cfg.engines)
        ],
        schedulers=cfg.schedulers,
        scheduler_args=cfg.scheduler_args,
        ephemeral=True,
        data_dir=base / "data",
        log_dir=log_dir,
        restart=BackoffPolicy(),  # what `autellix up` uses
    )
    say("starting the stack")
    stack = Stack(Settings(nats_url=None, database_url=None, namespace="chaos"), config)
    tap = AnswerTap()
    kills: list[Kill | None] = []  # one per window: the soak's is None
    windows: list[FaultWindow] = []
    soak: list[dict[str, Any]] = []
    fuzz_out: dict[str, Any] | None = None
    t_start = time.monotonic()
    try:
        async with stack:
            nats_url = stack.settings.nats_url
            assert nats_url is not None and stack.settings.database_url is not None
            await tap.start(nats_url)
            client = Client(nats_url, namespace="chaos", timeout=cfg.call_timeout_s)
            await client.connect()
            driver = LoadDriver(
                client,
                programs=cfg.programs,
                tag=f"{int(time.time())}",
                seed=cfg.seed,
                call_timeout_s=cfg.call_timeout_s,
            )
            driver.start()
            say("warming up")
            await _wait_completions(driver, cfg.programs * 2, 60.0)
            if not driver.completions():
                bad = [r for r in driver.records if r.outcome != "pending"][:3]
                raise RuntimeError(
                    "no call completed in 60 s of warm-up: "
                    + "; ".join(f"{r.error_code}: {r.error_message}" for r in bad)
                )
            start = time.monotonic()
            for fault in cfg.faults:
                say(f"{fault}: {cfg.pre_s:.0f}s of steady load")
                await asyncio.sleep(cfg.pre_s)
                say(f"{fault}: SIGKILL, waiting for its restart")
                kill = await kill_and_wait(stack, fault, wait_s=max(60.0, cfg.post_s))
                kills.append(kill)
                end = max(kill.killed_at + cfg.post_s, (kill.ready_at or time.monotonic()) + 4.0)
                say(f"{fault}: observing until {end - kill.killed_at:.0f}s after the kill")
                await asyncio.sleep(max(0.0, end - time.monotonic()))
                windows.append(FaultWindow(fault, start, end, kill.killed_at, cfg.pre_s))
                start = end
            if cfg.soak_minutes > 0:
                soak = await _soak(stack, cfg.soak_minutes * 60, say)
                windows.append(FaultWindow("none (soak)", start, time.monotonic(), None, 0.0))
                kills.append(None)
            say(f"draining: open calls get up to {cfg.call_timeout_s:.0f}s")
            await driver.stop(drain_s=cfg.call_timeout_s + 5.0)
            recovered = dict(client.recovered)  # resends before acceptance, resumes after
            await client.close()
            await asyncio.sleep(0.5)  # answers still on the way to the tap
            rows = await stored_calls(stack.settings.database_url, driver.program_prefix)
            await tap.close()  # before the stack stops: no reconnect attempts to a dead bus
            if cfg.fuzz_cases > 0:
                say(f"fuzz: {cfg.fuzz_cases} cases")
                fuzz_out = await _fuzz(stack, cfg.fuzz_cases, cfg.seed)
            say("stopping the stack")
    finally:
        await tap.close()
        with_log = log_dir / "supervisor.log"
        supervisor_log = with_log.read_text() if with_log.exists() else ""
        if cfg.log_dir is None:
            shutil.rmtree(base, ignore_errors=True)
    completions = driver.completions()
    faults = []
    series = []
    for window, kill in zip(windows, kills, strict=True):
        count = classify(
            window, driver.records, rows, tap.answers, completions, tap.kinds, tap.distinct
        )
        row = dict(asdict(count))
        if kill is not None:
            row["restart_delay_s"] = kill.restart_delay_s
            row["restarted_s"] = _since(kill.restarted_at, kill.killed_at)
            row["ready_s"] = _since(kill.ready_at, kill.killed_at)
        faults.append(row)
        plot_from = window.kill_at - window.pre_s if window.kill_at else window.start
        series.append(
            {
                "fault": window.fault,
                "kill_s": (window.kill_at - plot_from) if window.kill_at else None,
                "restarted_s": _since(kill.restarted_at, plot_from) if kill else None,
                "ready_s": _since(kill.ready_at, plot_from) if kill else None,
                "rate": rate_series(completions, plot_from, window.end),
            }
        )
    result: dict[str, Any] = {
        "faults": faults,
        "fuzz": fuzz_out["summary"] if fuzz_out else None,
        "fuzz_detail": fuzz_out,
        "programs_opened": driver.opened,
        "program_opens_refused": driver.open_refused,
        "wire_answers": sum(tap.answers.values()),
        "wire_deltas": tap.deltas,
        "client_recovered": recovered,
        "duration_s": round(time.monotonic() - t_start, 1),
        "config": {
            k: (list(v) if isinstance(v, tuple) else v)
            for k, v in asdict(cfg).items()
            if k not in ("log_dir", "extra")
        }
        | cfg.extra,
        "supervisor_log": supervisor_log.splitlines(),
        "series": series,
    }
    if soak:
        result["soak"] = {"minutes": cfg.soak_minutes, "rss": soak}
    return result


def _since(t: float | None, t0: float) -> float | None:
    return None if t is None else round(t - t0, 2)
