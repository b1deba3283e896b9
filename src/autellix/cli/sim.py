"""`autellix sim`: sweep program arrival rates for several policies on a workload (SIMULATED).

A contract other tools call: it writes DIR/results.json (`runs`, `sustainable`, ...), a PNG plot
and a Markdown table, and prints the table. Heavy imports (numpy, matplotlib, the simulator) stay
inside the command so `autellix --help` stays fast.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from autellix.cli.common import parse_kv, progress_bar

DEFAULT_POLICIES = "fcfs-nocache,fcfs,mlfq,plas,atlas,srpt"


def _floats(text: str | None) -> list[float] | None:
    if not text:
        return None
    vals = [float(x) for x in text.split(",") if x.strip()]
    if any(v <= 0 for v in vals):
        raise typer.BadParameter("rates must be > 0")
    return vals


def _mix(text: str | None) -> dict[str, float] | None:
    if not text:
        return None
    return {k: float(v) for k, v in parse_kv(text.split(",")).items()}


def sim(
    workload: Annotated[
        str, typer.Option(help="sharegpt, bfcl, lats or mixed (a blend of the three).")
    ],
    data: Annotated[
        list[Path] | None,
        typer.Option(
            help="Data file (ShareGPT JSON, BFCL JSON Lines, or a tokenizer.json); format "
            "detected; may repeat. Kinds without a file are generated (synthetic).",
        ),
    ] = None,
    policies: Annotated[str, typer.Option(help="Comma-separated policies.")] = DEFAULT_POLICIES,
    engines: Annotated[int, typer.Option(min=1, help="Number of simulated engines.")] = 1,
    rates: Annotated[
        str | None,
        typer.Option(help="Comma-separated program arrival rates (programs/s); default: sweep."),
    ] = None,
    programs: Annotated[int, typer.Option(min=1, help="Programs per run.")] = 500,
    seed: Annotated[int, typer.Option(help="Seed for sampling, sizes and arrivals.")] = 0,
    profile: Annotated[str, typer.Option(help="Engine cost profile of the simulator.")] = (
        "cpu-tiny"
    ),
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("sim-results"),
    balancer: Annotated[str, typer.Option(help="Load balancer across engines.")] = "locality",
    arrival: Annotated[str, typer.Option(help="poisson or bursty (gamma gaps).")] = "poisson",
    burst_cv: Annotated[
        float, typer.Option(help="Coefficient of variation of bursty gaps (>1 is bursty).")
    ] = 3.0,
    tokenizer: Annotated[
        Path | None, typer.Option(help="tokenizer.json for token counts (else ~4 chars/token).")
    ] = None,
    mix: Annotated[
        str | None, typer.Option(help="mixed shares, e.g. sharegpt=1,bfcl=1,lats=1 (default).")
    ] = None,
    sample: Annotated[
        str, typer.Option(help="reservoir (uniform, reads whole file) or head (first N).")
    ] = "reservoir",
    option: Annotated[
        list[str] | None, typer.Option(help="Simulator option KEY=VALUE; may repeat.")
    ] = None,
    workload_option: Annotated[
        list[str] | None,
        typer.Option(help="WorkloadOptions KEY=VALUE override (paper sizes otherwise); repeat."),
    ] = None,
    max_context: Annotated[
        int, typer.Option(help="Context limit in tokens; a program ends at a longer call.")
    ] = 8192,
    jobs: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 2,
    extend: Annotated[
        bool, typer.Option(help="Add rates until every policy crosses L* at m=2..10.")
    ] = True,
    slo: Annotated[
        str | None,
        typer.Option(
            help="Fixed SLOs in s/token for a second sustainable-rate table "
            "(default 0.05,0.1,0.2,0.5)."
        ),
    ] = None,
    levels: Annotated[
        str,
        typer.Option(help="The m of L* = m x light-load latency per token to read rates at."),
    ] = "2,5,10",
    hints: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            help="Give every call a hint of its program's remaining output tokens with "
            "log-normal noise of this standard deviation (0 = exact); read by gittins.",
        ),
    ] = None,
    classes: Annotated[
        str,
        typer.Option(
            help="Program class labels gittins learns per: kind (the workload kind), none, or "
            "shuffled (another program's kind: labels without information)."
        ),
    ] = "kind",
    tenants: Annotated[
        str | None,
        typer.Option(
            help="Give programs tenants by offered-load share, e.g. heavy:10,light:1 (drawn "
            "per program from the seed)."
        ),
    ] = None,
    tenant_weights: Annotated[
        str | None,
        typer.Option(
            help="Turn the tenant fair share on (virtual token counters) with these weights, "
            "e.g. heavy=1,light=1; unnamed tenants weigh 1."
        ),
    ] = None,
) -> None:
    """SIMULATED: latency per token vs program arrival rate for each policy on a workload."""
    from rich.console import Console

    from autellix.policy.fair_share import parse_weights
    from autellix.sim import list_policies, list_profiles, load_profile
    from autellix.sim.learning import CLASS_MODES
    from autellix.sim.metrics import ABSOLUTE_SLOS, at_load, sustainable_absolute
    from autellix.sim.report import BANNER, rich_tables, write_outputs
    from autellix.sim.sweep import SweepConfig, run_sweep
    from autellix.sim.tenants import parse_shares
    from autellix.workloads import WORKLOADS, WorkloadOptions, load_workload
    from autellix.workloads.arrivals import PROCESSES
    from autellix.workloads.options import override_options

    console = Console()
    if workload not in WORKLOADS:
        raise typer.BadParameter(f"--workload must be one of {', '.join(WORKLOADS)}")
    pols = [p.strip() for p in policies.split(",") if p.strip()]
    known = list(list_policies())
    bad = [p for p in pols if p not in known]
    if bad:
        raise typer.BadParameter(f"unknown policies {bad}; known: {', '.join(known)}")
    if profile not in list(list_profiles()):
        raise typer.BadParameter(f"unknown profile {profile!r}; known: {list(list_profiles())}")
    if arrival not in PROCESSES:
        raise typer.BadParameter(f"--arrival must be one of {', '.join(PROCESSES)}")
    rate_list = _floats(rates)
    slos = _floats(slo) or list(ABSOLUTE_SLOS)
    level_list = _floats(levels)
    if not level_list:
        raise typer.BadParameter("--levels needs at least one value")
    if classes not in CLASS_MODES:
        raise typer.BadParameter(f"--classes must be one of {', '.join(CLASS_MODES)}")

    console.print(f"[bold yellow]{BANNER}[/] run: discrete-event simulator, not real engines")
    t0 = time.perf_counter()
    load0 = list(os.getloadavg())
    sim_options = parse_kv(option)
    if hints is not None:
        sim_options["hints"] = hints
    if classes != "kind":
        sim_options["classes"] = classes
    try:
        if tenants is not None:
            parse_shares(tenants)
            sim_options["tenants"] = tenants
        if tenant_weights is not None:
            parse_weights(tenant_weights)
            sim_options["tenant_weights"] = tenant_weights
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    # a call must fit the engine's KV cache or it could never run: cap the context there
    prof = load_profile(profile)
    kv = int(sim_options.get("kv_capacity_tokens", prof.kv_capacity_tokens))
    try:
        base = WorkloadOptions(max_context_tokens=min(max_context, kv))
        opts = override_options(base, parse_kv(workload_option))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--workload-option") from exc
    try:
        wl = load_workload(
            workload,
            programs,
            seed,
            data=list(data or []),
            tokenizer=tokenizer,
            options=opts,
            mix=_mix(mix),
            sample_method=sample,
        )
    except (ValueError, FileNotFoundError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    src = ", ".join(f"{k}: {v}" for k, v in wl.sources.items())
    console.print(
        f"workload {workload}: {len(wl.programs)} programs ({src})"
        + (" — [bold]synthetic[/] kinds generated" if wl.synthetic else "")
        + f"; loaded in {time.perf_counter() - t0:.1f}s"
    )
    cfg = SweepConfig(
        workload=workload,
        policies=pols,
        engines=engines,
        profile=profile,
        balancer=balancer,
        seed=seed,
        arrival=arrival,
        burst_cv=burst_cv,
        sim_options=sim_options,
        jobs=jobs,
        levels=tuple(int(m) if m == int(m) else m for m in level_list),  # "10", not "10.0"
    )
    with progress_bar(console) as bar:
        task = bar.add_task(f"{BANNER} runs", total=0)

        def on_rates(batch: list[float]) -> None:
            total = bar.tasks[0].total or 0
            bar.update(task, total=total + len(batch) * len(pols))

        def on_run(rec: dict[str, Any]) -> None:
            bar.update(
                task, advance=1, description=f"{BANNER} {rec['policy']} @ {rec['rate']:.3g}/s"
            )

        if rate_list is None:
            bar.update(task, description=f"{BANNER} estimating capacity")
        res = run_sweep(
            wl.programs, cfg, rate_list, extend=extend, progress=on_run, on_rates=on_rates
        )
    payload: dict[str, Any] = {
        "simulated": True,
        "banner": f"{BANNER} results (discrete-event model, not measured on engines)",
        "meta": {
            "workload": workload,
            "programs": len(wl.programs),
            "engines": engines,
            "profile": profile,
            "balancer": balancer,
            "seed": seed,
            "arrival": arrival,
            "burst_cv": burst_cv if arrival == "bursty" else None,
            "policies": pols,
            "sources": wl.sources,
            "synthetic": wl.synthetic,
            "tokens": wl.tokens,
            "sim_options": cfg.sim_options,
            "max_context_tokens": opts.max_context_tokens,
            "workload_options": dataclasses.asdict(opts),
            "capacity_model": "analytic: engines / mean work per program at a full batch",
            "workload_stats": wl.stats(),
            "extensions": res.extensions,
            "wall_s": time.perf_counter() - t0,
            # other work shares this machine: wall times and speed depend on it, results do not
            "load_average_start": load0,
            "load_average_end": list(os.getloadavg()),
            "jobs": jobs,
            "command": " ".join(sys.argv),
        },
        "capacity_programs_per_s": res.capacity,
        "rates": res.rates,
        "runs": res.runs,
        "sustainable": res.sustainable,
        "sustainable_absolute": sustainable_absolute(res.runs, slos),
        "at_load": at_load(res.runs, res.capacity, 0.8),
    }
    paths = write_outputs(payload, out)
    for t in rich_tables(payload):
        console.print(t)
    console.print(f"[bold yellow]{BANNER}[/]: wrote " + ", ".join(str(p) for p in paths.values()))


def register(app: typer.Typer) -> None:
    """Add `autellix sim` to the CLI."""
    app.command("sim")(sim)
