"""`autellix bench live`: latency vs arrival rate per policy on the LIVE stack.

Replays a workload through real frontend/scheduler/engine processes over NATS and Postgres, one
fresh stack per (policy, rate), and writes the same results.json as `autellix sim`. With
`--backend sim` (default) the engines are SIMULATED, every output says so, and each run carries
the simulator's prediction. With `--backend vllm` every engine is a REAL vLLM engine and the
plain-vLLM baselines `vllm-fcfs` / `vllm-priority` run side by side with Autellix policies
(`autellix.bench.vllm_suite`). Heavy imports stay inside the command so `autellix --help` stays
fast.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any

import typer

from autellix.cli.bench.options import (
    BatchOpt,
    KvCacheGibOpt,
    MaxModelLenOpt,
    ModelDirOpt,
    PerSeqOpt,
    PrefillOpt,
    ProfileOpt,
    StepOpt,
    VllmModelOpt,
    floats,
    sim_timing,
)
from autellix.cli.bench.progress import run_sim, run_vllm, write_and_print
from autellix.cli.common import DatabaseUrlOpt, NatsUrlOpt, parse_kv

LiveBackendOpt = Annotated[
    str,
    typer.Option(
        help="Engine backend: `sim` (SIMULATED engines) or `vllm` (REAL vLLM engine; policies "
        "vllm-fcfs / vllm-priority run plain vLLM side by side with Autellix)."
    ),
]


def live_policies(policies: str | None, backend: str) -> list[str]:
    """--policies (default per backend), checked: distinct, plain-vLLM ones only on vllm."""
    from autellix.bench.vllm_suite import DEFAULT_POLICIES, check_policies

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
    capacity_search: Annotated[
        bool,
        typer.Option(
            help="vllm, without --rates: find capacity by running plain vLLM at rising rates "
            "until it saturates (else the probe's analytic estimate alone)."
        ),
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
    model: VllmModelOpt = "dummy:bench",
    load_format: Annotated[
        str, typer.Option(help="vllm: weight loading (`dummy`: random weights, real timing).")
    ] = "auto",
    max_model_len: MaxModelLenOpt = 4096,
    kv_cache_gib: KvCacheGibOpt = 1.0,
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
    model_dir: ModelDirOpt = None,
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
    from autellix.bench import report
    from autellix.bench.live import LiveConfig
    from autellix.bench.report import BANNER
    from autellix.bench.workload import live_options, load_live_workload
    from autellix.workloads import WORKLOADS
    from autellix.workloads.arrivals import PROCESSES

    pols = live_policies(policies, backend)
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
        "rates": floats(rates),
        "loads": floats(loads) or [0.3, 0.8, 1.2],
        "nats_url": nats_url,
        "database_url": database_url,
        "meta_extra": meta_extra,
        "partial_path": out / "results.partial.json",
    }
    if backend == "vllm":
        from autellix.bench import vllm_report
        from autellix.bench.plain_vllm import VllmEngineSpec
        from autellix.bench.vllm_suite import BANNER as VLLM_BANNER
        from autellix.bench.vllm_suite import VllmBenchConfig

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
        vcfg = VllmBenchConfig(
            spec=spec, repeats=repeats, capacity_search=capacity_search, **common_cfg
        )
        payload = run_vllm(vcfg, wl, **common_run)
        write_and_print(payload, out, vllm_report, VLLM_BANNER, "green")
        return
    timing = sim_timing(engine_profile, max_batch, step_s, step_per_seq_s, prefill_per_token_s)
    if engine_arg:
        timing = dataclasses.replace(timing, extra_args=(*timing.extra_args, *engine_arg))
    cfg = LiveConfig(timing=timing, engines=engines, **common_cfg)
    payload = run_sim(cfg, wl, do_probe=probe, **common_run)
    write_and_print(payload, out, report, BANNER, "yellow")
