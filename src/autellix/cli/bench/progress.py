"""How `autellix bench live` runs and reports: a rich progress bar over the runs (one line per
finished run, the runs so far checkpointed to results.partial.json), then the outputs written and
the console tables printed, for either backend.

The benchmark itself is in `autellix.bench` (`suite` for simulated engines, `vllm_suite` for the
real vLLM engine); this module only drives it from the command line.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import typer

from autellix.cli.bench.options import make_console
from autellix.cli.common import progress_bar

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from rich.console import Console

    from autellix.bench.live import LiveConfig
    from autellix.bench.sweep import Callbacks
    from autellix.bench.vllm_suite import VllmBenchConfig
    from autellix.workloads.loader import Workload


def _progress_run(
    console: Console,
    banner: str,
    runs_total: int,
    programs: int,
    partial: Path | None,
    run: Callable[[Callbacks], Awaitable[dict[str, Any]]],
) -> dict[str, Any]:
    """Run a live benchmark under a rich progress bar (runs overall, programs of the current run),
    printing one line per finished run and checkpointing the runs so far to `partial`."""

    from autellix.bench.sweep import Callbacks

    with progress_bar(console) as bar:
        overall = bar.add_task(f"{banner} runs", total=runs_total)
        current = bar.add_task("starting", total=programs)

        def phase(msg: str) -> None:
            bar.update(current, description=msg, completed=0)

        def run_start(policy: str, rate: float, n: int) -> None:
            bar.update(
                current,
                description=f"{policy} @ {rate:.3g}/s: starting engine/stack",
                completed=0,
                total=n,
            )

        def stack_ready() -> None:
            desc = bar.tasks[current].description.replace(": starting engine/stack", ": programs")
            bar.update(current, description=desc)

        def run_done(rec: dict[str, Any]) -> None:
            bar.advance(overall)
            sim = rec.get("sim_avg_latency_s")
            who = (
                (" plain vLLM" if rec.get("plain_vllm") else " Autellix")
                if (rec.get("backend") == "vllm")
                else ""
            )
            console.print(
                f"  {rec['policy']:>13}{who} @ {rec['rate']:.4g}/s: avg "
                f"{rec['avg_latency_s']:.2f} s, p99 {rec['p99_latency_s']:.2f} s, "
                f"{rec['avg_latency_per_token_s'] * 1000:.1f} ms/token"
                + (f"; simulated avg {sim:.2f} s" if sim else "")
                + f"; failed calls {rec['failed_calls']}; load {rec['load_avg_end']:.1f}"
            )

        def run_failed(policy: str, rate: float, exc: BaseException) -> None:
            bar.advance(overall)
            console.print(f"[bold red]  {policy} @ {rate:.4g}/s FAILED[/]: {exc!r}"[:2000])

        def checkpoint(runs: list[dict[str, Any]]) -> None:
            if partial is not None:
                partial.parent.mkdir(parents=True, exist_ok=True)
                partial.write_text(json.dumps({"partial": True, "runs": runs}, default=str))

        cb = Callbacks(
            phase=phase,
            run_start=run_start,
            stack_ready=stack_ready,
            program_done=lambda: bar.advance(current),
            run_done=run_done,
            run_failed=run_failed,
            checkpoint=checkpoint,
        )
        return asyncio.run(run(cb))


def _runs_total(policies: list[str], kwargs: dict[str, Any], repeats: int = 1) -> int:
    """Runs the progress bar expects (a probe may not know its rates yet: `loads` counts)."""
    return len(policies) * len(kwargs.get("rates") or kwargs.get("loads") or []) * repeats


def run_sim(cfg: LiveConfig, wl: Workload, **kwargs: Any) -> dict[str, Any]:
    """`bench live --backend sim` under the progress bar; warns first about any policy the
    scheduler would not apply (it would run as FCFS and be marked so)."""
    from autellix.bench.report import BANNER
    from autellix.bench.stack import policy_args
    from autellix.bench.suite import run_live_bench

    console = make_console()
    console.print(
        f"[bold yellow]{BANNER}[/]: {len(wl.programs)} {wl.name} programs, policies "
        f"{', '.join(cfg.policies)}, {cfg.engines} sim engine(s), {cfg.schedulers} scheduler(s)"
    )
    for p in cfg.policies:
        _, applied, _ = policy_args(p)
        if not applied:
            console.print(
                f"[bold red]warning[/]: the scheduler does not take a policy flag; {p} runs as "
                "its built-in FCFS and is marked policy_applied=false"
            )
    partial = kwargs.pop("partial_path", None)
    return _progress_run(
        console,
        BANNER,
        _runs_total(cfg.policies, kwargs),
        len(wl.programs),
        partial,
        lambda cb: run_live_bench(cfg, wl, callbacks=cb, **kwargs),
    )


def run_vllm(cfg: VllmBenchConfig, wl: Workload, **kwargs: Any) -> dict[str, Any]:
    """`bench live --backend vllm` under the progress bar, saying which policies are plain
    vLLM and which Autellix before the (long) first engine start."""
    from autellix.bench.plain_vllm import is_plain
    from autellix.bench.vllm_suite import BANNER, model_label, run_vllm_bench

    console = make_console()
    plain = [p for p in cfg.policies if is_plain(p)]
    autellix = [p for p in cfg.policies if not is_plain(p)]
    console.print(
        f"[bold green]{BANNER}[/]: {len(wl.programs)} {wl.name} programs; "
        f"{model_label(cfg.spec)}, batch {cfg.spec.max_batch}; plain vLLM: "
        f"{', '.join(plain) or '-'}; Autellix: {', '.join(autellix) or '-'}"
        + ("" if kwargs.get("rates") else "; rates from a capacity probe")
    )
    partial = kwargs.pop("partial_path", None)
    return _progress_run(
        console,
        "REAL vLLM",
        _runs_total(cfg.policies, kwargs, cfg.repeats),
        len(wl.programs),
        partial,
        lambda cb: run_vllm_bench(cfg, wl, callbacks=cb, **kwargs),
    )


def write_and_print(
    payload: dict[str, Any], out: Path, outputs: ModuleType, banner: str, color: str
) -> None:
    """Write a benchmark's outputs (`outputs`: `bench.report` or `bench.vllm_report`), print its
    console tables and what failed, and exit non-zero when any call or run failed, so a script
    or CI running the benchmark notices."""
    console = make_console()
    paths = outputs.write_outputs(payload, out)
    for t in outputs.rich_tables(payload):
        console.print(t)
    agree = payload.get("live_vs_sim") or {}
    if agree.get("runs"):
        console.print(
            f"live vs simulated average program latency within {agree['tolerance']:.0%}: "
            f"{agree['within_tolerance']}/{agree['total']} runs (mean |live/sim-1| "
            f"{agree['mean_abs_error']:.1%})"
        )
    for warning in payload.get("warnings") or []:
        console.print(f"[bold yellow]{warning}[/]")
    failed = sum(r.get("failed_calls", 0) for r in payload["runs"])
    if failed:
        console.print(f"[red]{failed} call(s) failed[/red]")
    for f in payload.get("failed_runs", []):
        console.print(
            f"[red]run {f['policy']} @ {f['rate']:.4g}/s failed: {f['error'][:300]}[/red]"
        )
    (out / "results.partial.json").unlink(missing_ok=True)
    console.print(f"[bold {color}]{banner}[/]: wrote " + ", ".join(str(p) for p in paths.values()))
    if failed or payload.get("failed_runs"):
        raise typer.Exit(1)
