"""`autellix bench`: benchmarks against the live stack (`live`, `overhead`, `scaling`).

`bench live` replays a workload through real frontend/scheduler/engine processes over NATS and
Postgres, one fresh stack per (policy, rate), and writes the same results.json as `autellix sim`.
With `--backend sim` (default) the engines are SIMULATED, every output says so, and each run
carries the simulator's prediction. With `--backend vllm` every engine is a REAL vLLM engine and
the plain-vLLM baselines `vllm-fcfs` / `vllm-priority` run side by side with Autellix policies
(`livebench.vllm_suite`, issue 6). Heavy imports stay inside the commands so `autellix --help`
stays fast.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from autellix.commands.common import DatabaseUrlOpt, NatsUrlOpt, parse_kv

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from rich.console import Console

    from autellix.livebench.engine import SimEngineTiming
    from autellix.livebench.live import LiveConfig
    from autellix.livebench.suite import Callbacks
    from autellix.livebench.vllm_suite import VllmBenchConfig
    from autellix.workloads.loader import Workload

bench_app = typer.Typer(
    name="bench",
    help="Benchmarks on the live stack (SIMULATED engines, or REAL vLLM with `live --backend "
    "vllm`): live, overhead, scaling.",
    no_args_is_help=True,
)

BackendOpt = Annotated[str, typer.Option(help="Engine backend (only `sim` here).")]
LiveBackendOpt = Annotated[
    str,
    typer.Option(
        help="Engine backend: `sim` (SIMULATED engines) or `vllm` (REAL vLLM engine; policies "
        "vllm-fcfs / vllm-priority run plain vLLM side by side with Autellix)."
    ),
]
ProfileOpt = Annotated[
    str,
    typer.Option(help="Simulator profile whose step/per-seq/prefill terms the sim engine takes."),
]
BatchOpt = Annotated[int, typer.Option(min=1, help="Batch size (max running calls) per engine.")]
StepOpt = Annotated[float | None, typer.Option(help="Override: sim engine seconds per batch step.")]
PerSeqOpt = Annotated[
    float | None, typer.Option(help="Override: sim engine extra seconds per step per sequence.")
]
PrefillOpt = Annotated[
    float | None, typer.Option(help="Override: sim engine seconds per uncached prompt token.")
]


def _floats(text: str | None) -> list[float] | None:
    if not text:
        return None
    vals = [float(x) for x in text.split(",") if x.strip()]
    if not vals or any(v <= 0 for v in vals):
        raise typer.BadParameter("expected positive comma-separated numbers")
    return vals


def _ints(text: str) -> list[int]:
    vals = [int(x) for x in text.split(",") if x.strip()]
    if not vals or any(v < 1 for v in vals):
        raise typer.BadParameter("expected positive comma-separated integers")
    return vals


def _timing(
    profile: str, batch: int, step: float | None, per_seq: float | None, prefill: float | None
) -> SimEngineTiming:
    from autellix.livebench.engine import SimEngineTiming

    try:
        return SimEngineTiming.from_profile(
            profile,
            batch,
            step_s=step,
            step_per_seq_s=per_seq,
            prefill_per_token_s=prefill,
            **({"source": "explicit flags"} if None not in (step, per_seq, prefill) else {}),
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


def _live_policies(policies: str | None, backend: str) -> list[str]:
    """--policies (default per backend), checked: distinct, plain-vLLM ones only on vllm."""
    from autellix.livebench.vllm_suite import DEFAULT_POLICIES, check_policies

    if backend not in ("sim", "vllm"):
        raise typer.BadParameter(f"--backend must be sim or vllm (got {backend!r})")
    if policies is None:
        policies = ",".join(DEFAULT_POLICIES) if backend == "vllm" else "fcfs,plas,atlas"
    pols = [p.strip() for p in policies.split(",") if p.strip()]
    if not pols or len(set(pols)) != len(pols):
        raise typer.BadParameter("--policies must name distinct policies")
    try:
        check_policies(pols, backend)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--policies") from exc
    return pols


@bench_app.command("live")
def live(
    workload: Annotated[str, typer.Option(help="sharegpt, bfcl, lats or mixed.")],
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("bench-live-results"),
    data: Annotated[
        list[Path] | None,
        typer.Option(help="Data file (ShareGPT JSON, BFCL JSON Lines, tokenizer.json); repeat."),
    ] = None,
    policies: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated live policies; default fcfs,plas,atlas (sim) or "
            "vllm-fcfs,vllm-priority,plas,atlas (vllm). vllm-fcfs / vllm-priority (plain vLLM) "
            "need --backend vllm."
        ),
    ] = None,
    engines: Annotated[int, typer.Option(min=1, help="Simulated engines (sim only).")] = 1,
    schedulers: Annotated[int, typer.Option(min=1, help="Scheduler replicas.")] = 1,
    backend: LiveBackendOpt = "sim",
    programs: Annotated[int, typer.Option(min=1, help="Programs per run.")] = 60,
    rates: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated program arrival rates (programs/s); default: "
            "--loads x the measured capacity."
        ),
    ] = None,
    loads: Annotated[
        str, typer.Option(help="Fractions of capacity to run when --rates is not given.")
    ] = "0.3,0.8,1.2",
    seed: Annotated[int, typer.Option(help="Seed for sampling, sizes and arrivals.")] = 0,
    nats_url: NatsUrlOpt = None,
    database_url: DatabaseUrlOpt = None,
    engine_profile: ProfileOpt = "cpu-tiny",
    max_batch: BatchOpt = 16,
    step_s: StepOpt = None,
    step_per_seq_s: PerSeqOpt = None,
    prefill_per_token_s: PrefillOpt = None,
    arrival: Annotated[str, typer.Option(help="poisson or bursty.")] = "poisson",
    burst_cv: Annotated[float, typer.Option(help="CV of bursty gaps.")] = 3.0,
    tokenizer: Annotated[Path | None, typer.Option(help="tokenizer.json for token counts.")] = None,
    mix: Annotated[
        str | None, typer.Option(help="mixed shares, e.g. sharegpt=1,bfcl=1,lats=1.")
    ] = None,
    sample: Annotated[str, typer.Option(help="reservoir or head.")] = "reservoir",
    workload_option: Annotated[
        list[str] | None, typer.Option(help="WorkloadOptions KEY=VALUE override; repeat.")
    ] = None,
    paper_sizes: Annotated[
        bool,
        typer.Option(
            help="Use the paper's program sizes (hours per run) instead of the scaled live sizes."
        ),
    ] = False,
    probe: Annotated[
        bool, typer.Option(help="Measure control-plane delay and step time first.")
    ] = True,
    balancer: Annotated[
        str,
        typer.Option(
            help="Engine load balancer for the schedulers and the simulator: locality, "
            "least-loaded or round-robin."
        ),
    ] = "locality",
    scheduler_arg: Annotated[
        list[str] | None, typer.Option(help="Extra flag for the scheduler replicas; repeat.")
    ] = None,
    engine_arg: Annotated[
        list[str] | None,
        typer.Option(
            help="Extra flag for the Autellix engine services (--engine-arg=--report-interval=0.5);"
            " repeat."
        ),
    ] = None,
    call_timeout: Annotated[float, typer.Option(help="Seconds before a call gives up.")] = 900.0,
    log_dir: Annotated[Path | None, typer.Option(help="Keep service logs here.")] = None,
    model: Annotated[
        str,
        typer.Option(
            help="vllm: model directory, HF name, or a built-in dummy-weight Llama preset "
            "(dummy:tiny, dummy:bench, dummy:llama-8b)."
        ),
    ] = "dummy:bench",
    load_format: Annotated[
        str, typer.Option(help="vllm: weight loading (`dummy`: random weights, real timing).")
    ] = "auto",
    max_model_len: Annotated[int, typer.Option(min=16, help="vllm: max model length.")] = 4096,
    kv_cache_gib: Annotated[
        float,
        typer.Option(
            min=0.0, help="vllm: KV cache size in GiB (CPU); 0 = vLLM's own sizing (GPUs)."
        ),
    ] = 1.0,
    queue_ahead: Annotated[
        int, typer.Option(min=0, help="vllm, Autellix engine: calls resident in vLLM's queue.")
    ] = 0,
    nice: Annotated[
        int | None, typer.Option(help="vllm: renice vLLM's processes in every run (< 0: root).")
    ] = None,
    pin_model_core: Annotated[
        bool,
        typer.Option(
            help="vllm on CPU: run everything but vLLM's model worker off its core (both sides)."
        ),
    ] = False,
    model_dir: Annotated[
        Path | None, typer.Option(help="vllm: where dummy presets are written.")
    ] = None,
    vllm_opt: Annotated[
        list[str] | None,
        typer.Option(help="vllm: further VllmBackendConfig KEY=VALUE for both sides; repeat."),
    ] = None,
    repeats: Annotated[
        int,
        typer.Option(
            min=1,
            help="vllm: run every (rate, policy) this many times, policies in rotated order;"
            " results show mean ± sd and per-repeat ratios.",
        ),
    ] = 1,
) -> None:
    """LIVE stack: latency vs arrival rate per policy. `--backend sim`: SIMULATED engines, with
    the simulator's prediction of every run. `--backend vllm`: a REAL vLLM engine, plain vLLM
    (vllm-fcfs, vllm-priority) vs Autellix (plas, atlas, ...) side by side."""
    from autellix.livebench.live import LiveConfig
    from autellix.livebench.workload import live_options, load_live_workload
    from autellix.workloads import WORKLOADS
    from autellix.workloads.arrivals import PROCESSES

    pols = _live_policies(policies, backend)
    if workload not in WORKLOADS:
        raise typer.BadParameter(f"--workload must be one of {', '.join(WORKLOADS)}")
    if arrival not in PROCESSES:
        raise typer.BadParameter(f"--arrival must be one of {', '.join(PROCESSES)}")
    if repeats > 1 and backend != "vllm":
        raise typer.BadParameter("--repeats is for --backend vllm", param_hint="--repeats")
    if backend == "vllm" and engines != 1:
        raise typer.BadParameter(
            "--backend vllm runs one engine (the plain-vLLM baselines have one)",
            param_hint="--engines",
        )
    try:
        opts = live_options(parse_kv(workload_option), paper_sizes)
        mix_d = {k: float(v) for k, v in parse_kv(mix.split(",")).items()} if mix else None
        wl = load_live_workload(
            workload,
            programs,
            seed,
            data=data,
            tokenizer=tokenizer,
            mix=mix_d,
            sample=sample,
            options=opts,
        )
    except (ValueError, FileNotFoundError) as exc:
        raise typer.BadParameter(str(exc)) from exc

    meta_extra = {"workload_options": dataclasses.asdict(opts), "paper_sizes": paper_sizes}
    # what both backends' benchmark configs and runners take from the same options
    common_cfg: dict[str, Any] = {
        "workload": workload,
        "policies": pols,
        "schedulers": schedulers,
        "seed": seed,
        "arrival": arrival,
        "burst_cv": burst_cv,
        "balancer": balancer,
        "call_timeout_s": call_timeout,
        "log_dir": log_dir,
        "extra_scheduler_args": list(scheduler_arg or []),
    }
    common_run: dict[str, Any] = {
        "rates": _floats(rates),
        "loads": _floats(loads) or [0.3, 0.8, 1.2],
        "nats_url": nats_url,
        "database_url": database_url,
        "meta_extra": meta_extra,
        "partial_path": out / "results.partial.json",
    }
    if backend == "vllm":
        from autellix.livebench.plain_vllm import VllmEngineSpec
        from autellix.livebench.vllm_suite import VllmBenchConfig

        spec = VllmEngineSpec(
            model=model,
            max_batch=max_batch,
            max_model_len=max_model_len,
            kv_cache_gib=kv_cache_gib or None,
            load_format=load_format,
            model_dir=str(model_dir) if model_dir else None,
            queue_ahead=queue_ahead,
            nice=nice,
            pin_model_core=pin_model_core,
            extra_args=tuple(engine_arg or ()),
            options=tuple(
                (k, str(v).lower() if isinstance(v, bool) else str(v))
                for k, v in parse_kv(vllm_opt).items()
            ),
        )
        vcfg = VllmBenchConfig(spec=spec, repeats=repeats, **common_cfg)
        payload = _run_vllm_with_progress(vcfg, wl, **common_run)
        _write_and_print_vllm(payload, out)
        return
    timing = _timing(engine_profile, max_batch, step_s, step_per_seq_s, prefill_per_token_s)
    if engine_arg:
        timing = dataclasses.replace(timing, extra_args=(*timing.extra_args, *engine_arg))
    cfg = LiveConfig(timing=timing, engines=engines, **common_cfg)
    payload = _run_with_progress(cfg, wl, do_probe=probe, **common_run)
    _write_and_print(payload, out)


def _console() -> Console:
    """A rich console; wide when output is not a terminal (logs, CI) so tables stay readable."""
    from rich.console import Console

    probe = Console()
    return probe if probe.is_terminal else Console(width=max(probe.width, 180))


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
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from autellix.livebench.suite import Callbacks

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
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
    return len(policies) * len(kwargs.get("rates") or kwargs.get("loads") or []) * repeats


def _run_with_progress(cfg: LiveConfig, wl: Workload, **kwargs: Any) -> dict[str, Any]:
    from autellix.livebench.report import BANNER
    from autellix.livebench.stack import policy_args
    from autellix.livebench.suite import run_live_bench

    console = _console()
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


def _run_vllm_with_progress(cfg: VllmBenchConfig, wl: Workload, **kwargs: Any) -> dict[str, Any]:
    from autellix.livebench.plain_vllm import is_plain
    from autellix.livebench.vllm_suite import BANNER, model_label, run_vllm_bench

    console = _console()
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


def _write_and_print_vllm(payload: dict[str, Any], out: Path) -> None:
    from autellix.livebench.vllm_suite import BANNER, rich_tables, write_outputs

    console = _console()
    paths = write_outputs(payload, out)
    for t in rich_tables(payload):
        console.print(t)
    (out / "results.partial.json").unlink(missing_ok=True)
    failed = sum(r.get("failed_calls", 0) for r in payload["runs"])
    if failed:
        console.print(f"[red]{failed} call(s) failed[/red]")
    for f in payload.get("failed_runs", []):
        console.print(
            f"[red]run {f['policy']} @ {f['rate']:.4g}/s failed: {f['error'][:300]}[/red]"
        )
    console.print(f"[bold green]{BANNER}[/]: wrote " + ", ".join(str(p) for p in paths.values()))
    if failed or payload.get("failed_runs"):
        raise typer.Exit(1)


def _write_and_print(payload: dict[str, Any], out: Path) -> None:

    from autellix.livebench.report import BANNER, rich_tables, write_outputs

    console = _console()
    paths = write_outputs(payload, out)
    for t in rich_tables(payload):
        console.print(t)
    agree = payload.get("live_vs_sim") or {}
    if agree.get("runs"):
        console.print(
            f"live vs simulated average program latency within {agree['tolerance']:.0%}: "
            f"{agree['within_tolerance']}/{agree['total']} runs (mean |live/sim-1| "
            f"{agree['mean_abs_error']:.1%})"
        )
    failed = sum(r.get("failed_calls", 0) for r in payload["runs"])
    if failed:
        console.print(f"[red]{failed} call(s) failed[/red]")
    for f in payload.get("failed_runs", []):
        console.print(
            f"[red]run {f['policy']} @ {f['rate']:.4g}/s failed: {f['error'][:300]}[/red]"
        )
    (out / "results.partial.json").unlink(missing_ok=True)
    if failed or payload.get("failed_runs"):
        raise typer.Exit(1)
    console.print(f"[bold yellow]{BANNER}[/]: wrote " + ", ".join(str(p) for p in paths.values()))


@bench_app.command("overhead")
def overhead(
    out: Annotated[Path, typer.Option(help="Output directory (writes overhead.json).")] = Path(
        "bench-overhead-results"
    ),
    calls: Annotated[int, typer.Option(min=3, help="Sequential calls for p50/p99.")] = 500,
    warmup: Annotated[int, typer.Option(min=0, help="Calls before measuring.")] = 20,
    burst: Annotated[
        int, typer.Option(min=2, help="Calls queued before a scheduler starts.")
    ] = 5000,
    concurrency: Annotated[
        int | None, typer.Option(help="Scheduler --concurrency (default: the scheduler's own).")
    ] = None,
    nats_url: NatsUrlOpt = None,
    database_url: DatabaseUrlOpt = None,
    py_spy: Annotated[
        Path | None,
        typer.Option(help="py-spy: sample the scheduler during the burst into this file."),
    ] = None,
    log_dir: Annotated[Path | None, typer.Option(help="Keep service logs here.")] = None,
    compare_direct: Annotated[
        bool,
        typer.Option(
            help="Also measure with direct hops off (JetStream only), in alternating rounds."
        ),
    ] = True,
    rounds: Annotated[
        int, typer.Option(min=1, help="Alternating rounds per setting when comparing.")
    ] = 2,
) -> None:
    """Control-plane overhead with a zero-work SIMULATED engine: per-call latency the frontend +
    scheduler + engine path adds (p50/p99), and one scheduler replica's decisions per second."""

    from autellix.livebench.overhead import OverheadConfig, run_overhead, write_overhead

    console = _console()
    cfg = OverheadConfig(
        calls=calls,
        warmup=warmup,
        burst=burst,
        scheduler_concurrency=concurrency,
        py_spy_out=py_spy,
        log_dir=log_dir,
        compare_direct=compare_direct,
        rounds=rounds,
    )
    with console.status("measuring control-plane overhead (zero-work SIMULATED engine) ..."):
        result = asyncio.run(run_overhead(cfg, nats_url=nats_url, database_url=database_url))
    paths = write_overhead(result, out)
    for line in result["summary"]:
        console.print(line)
    console.print("wrote " + ", ".join(str(p) for p in paths))


@bench_app.command("scaling")
def scaling(
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("bench-scaling-results"),
    workload: Annotated[str, typer.Option(help="sharegpt, bfcl, lats or mixed.")] = "mixed",
    engines_list: Annotated[str, typer.Option("--engines", help="Engine counts.")] = "1,2,4,8",
    schedulers_list: Annotated[
        str, typer.Option("--schedulers", help="Scheduler replica counts.")
    ] = "1,2",
    policy: Annotated[str, typer.Option(help="Live policy.")] = "atlas",
    balancer: Annotated[str, typer.Option(help="Engine load balancer.")] = "locality",
    programs_per_engine: Annotated[int, typer.Option(min=1, help="Programs per engine.")] = 30,
    load: Annotated[float, typer.Option(help="Offered load as a fraction of capacity.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    nats_url: NatsUrlOpt = None,
    database_url: DatabaseUrlOpt = None,
    engine_profile: ProfileOpt = "cpu-tiny",
    max_batch: BatchOpt = 16,
    step_s: StepOpt = None,
    step_per_seq_s: PerSeqOpt = None,
    prefill_per_token_s: PrefillOpt = None,
    workload_option: Annotated[
        list[str] | None, typer.Option(help="WorkloadOptions KEY=VALUE override; repeat.")
    ] = None,
    log_dir: Annotated[Path | None, typer.Option(help="Keep service logs here.")] = None,
) -> None:
    """LIVE stack + SIMULATED engines: throughput and latency with 1..8 engines and 1..2
    scheduler replicas at the same offered load per engine."""

    from autellix.livebench.scaling import ScalingConfig, run_scaling, write_scaling
    from autellix.livebench.workload import live_options

    console = _console()
    cfg = ScalingConfig(
        workload=workload,
        engines=_ints(engines_list),
        schedulers=_ints(schedulers_list),
        policy=policy,
        balancer=balancer,
        programs_per_engine=programs_per_engine,
        load=load,
        seed=seed,
        timing=_timing(engine_profile, max_batch, step_s, step_per_seq_s, prefill_per_token_s),
        options=live_options(parse_kv(workload_option)),
        log_dir=log_dir,
    )
    payload = asyncio.run(
        run_scaling(cfg, nats_url=nats_url, database_url=database_url, console=console)
    )
    paths = write_scaling(payload, out)
    console.print("wrote " + ", ".join(str(p) for p in paths))


@bench_app.command("report")
def report(
    results: Annotated[Path, typer.Argument(help="A results.json of `bench live` or `scaling`.")],
) -> None:
    """Rewrite the Markdown and PNG next to a results.json (after a report format change)."""
    payload = json.loads(results.read_text())
    if payload.get("backend") == "vllm":
        from autellix.livebench import vllm_suite

        paths = list(
            vllm_suite.write_outputs(vllm_suite.summarize(payload), results.parent).values()
        )
    elif "scaling" in payload.get("banner", ""):
        from autellix.livebench.scaling import write_scaling

        paths = write_scaling(payload, results.parent)
    else:
        from autellix.livebench.report import write_outputs
        from autellix.livebench.suite import summarize

        paths = list(write_outputs(summarize(payload), results.parent).values())
    typer.echo("wrote " + ", ".join(str(p) for p in paths))


def register(app: typer.Typer) -> None:
    """Add `autellix bench` (live, overhead, scaling) to the CLI."""
    app.add_typer(bench_app, name="bench")
