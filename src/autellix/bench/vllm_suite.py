"""`autellix bench live --backend vllm`: Autellix vs plain vLLM on the REAL vLLM engine.

Both sides run in one benchmark. Every (rate, policy) run gets a fresh engine (empty prefix
cache) and the same programs, arrival times and prompt token ids (`autellix.bench.driver`):

* `vllm-fcfs`, `vllm-priority`: plain vLLM (`bench.plain_vllm`): calls straight to an
  in-process `AsyncLLM`; FCFS, or vLLM `priority` = the program's attained service.
* any other name (`plas`, `atlas`, `mlfq`, `fcfs`): Autellix through the whole stack (frontend,
  scheduler `--policy NAME`, engine service `--backend vllm` with the same engine settings, NATS,
  Postgres) -- one `live.live_run`, the very code path of the simulated-engine benchmark.

This module holds the config and the runs; the grid and the results.json frame are shared with
the simulated-engine benchmark (`bench.sweep`). Without `--rates` the rates come from a capacity
probe (`bench.vllm_capacity`); what derives from the runs is `bench.vllm_compare` and the
outputs (`results.json`, `results.md`, `latency.png`, console tables) are `bench.vllm_report`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from autellix.bench.cpupin import ModelCorePin
from autellix.bench.driver import ProgramRun
from autellix.bench.live import LiveConfig, live_run
from autellix.bench.plain_vllm import (
    VllmEngineSpec,
    driver_vocab,
    is_plain,
    plain_record,
    run_plain_vllm,
)
from autellix.bench.reporting import load_avg
from autellix.bench.stack import Infra
from autellix.bench.sweep import DEFAULT_LOADS, Callbacks, Grid
from autellix.bench.vllm_capacity import VllmProbe, capacity, probe_vllm
from autellix.bench.vllm_compare import summarize
from autellix.bench.vllm_saturation import (
    SaturationSearch,
    saturation_warning,
    search_saturation,
)
from autellix.workloads.loader import Workload

BANNER = "REAL vLLM engine: Autellix stack vs plain vLLM"
AUTELLIX_SYSTEM = "Autellix (frontend, scheduler, engine service) + REAL vLLM engine"
PLAIN_SYSTEM = "plain vLLM (REAL vLLM engine: AsyncLLM in the benchmark process, no Autellix)"
DEFAULT_POLICIES = ("vllm-fcfs", "vllm-priority", "plas", "atlas")
DEFAULT_MODEL = "dummy:bench"


def check_policies(policies: Sequence[str], backend: str) -> None:
    """Refuse plain-vLLM baselines on any backend but `vllm` (they *are* a vLLM engine)."""
    plain = [p for p in policies if is_plain(p)]
    if plain and backend != "vllm":
        raise ValueError(
            f"{', '.join(plain)}: plain-vLLM baselines run a real vLLM engine without Autellix; "
            f"they need --backend vllm (got --backend {backend}). Policies for --backend "
            f"{backend}: fcfs, plas, atlas, mlfq, ..."
        )


def dummy_weights(spec: VllmEngineSpec | dict[str, Any]) -> bool:
    """Whether the engine runs random weights (a `dummy:` preset, or `--load-format dummy`);
    `spec` may also be its `describe()` dict (as results.json keeps it)."""
    d = spec if isinstance(spec, dict) else spec.describe()
    return str(d.get("model", "")).startswith("dummy:") or d.get("load_format") == "dummy"


def model_label(spec: VllmEngineSpec | dict[str, Any]) -> str:
    """`model X (dummy weights: random, real timing)` or `model X (real weights)`."""
    d = spec if isinstance(spec, dict) else spec.describe()
    weights = "dummy weights: random, real timing" if dummy_weights(d) else "real weights"
    return f"model {d.get('model')} ({weights})"


@dataclass
class VllmBenchConfig:
    """What stays fixed across the (policy, rate) runs of one vLLM benchmark."""

    workload: str
    policies: list[str]
    spec: VllmEngineSpec = field(default_factory=VllmEngineSpec)
    schedulers: int = 1
    seed: int = 0
    arrival: str = "poisson"
    burst_cv: float = 3.0
    balancer: str = "locality"
    call_timeout_s: float = 1800.0
    log_dir: Path | None = None
    extra_scheduler_args: list[str] = field(default_factory=list)
    ready_timeout_s: float = 420.0
    repeats: int = 1  # the whole grid this many times, policies rotated (`repeats.py`)
    #: without --rates: find capacity by running plain vLLM up to saturation
    #: (`vllm_saturation`); False: the probe's analytic estimate alone
    capacity_search: bool = True
    search_steps: int = 6

    def live_config(self) -> LiveConfig:
        """The Autellix runs' `LiveConfig` (one engine: the plain runs have one vLLM engine)."""
        # every setting the two configs share, except the repeats (this suite rotates them)
        shared = {f.name for f in fields(LiveConfig)} & {f.name for f in fields(self)}
        same = {name: getattr(self, name) for name in shared - {"repeats"}}
        return LiveConfig(**same, timing=self.spec, engines=1)


# --------------------------------------------------------------------------- capacity probe


# --------------------------------------------------------------------------- runs


def _label(rec: dict[str, Any], spec: VllmEngineSpec, plain: bool) -> dict[str, Any]:
    """What every run record says about itself (REAL engine, which system, model, weights)."""
    rec.update(
        {
            "live": True,
            "backend": "vllm",
            "simulated": False,
            "real_vllm_engine": True,
            "plain_vllm": plain,
            "system": PLAIN_SYSTEM if plain else AUTELLIX_SYSTEM,
            "engines_label": (PLAIN_SYSTEM if plain else AUTELLIX_SYSTEM)
            + f"; {model_label(spec)}",
            "model": spec.model,
            "dummy_weights": dummy_weights(spec),
            "engine": spec.describe(),
        }
    )
    return rec


async def vllm_run(
    infra: Infra,
    cfg: VllmBenchConfig,
    programs: list[Any],
    policy: str,
    rate: float,
    *,
    on_program: Callable[[ProgramRun], None] | None = None,
    on_started: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """One (policy, rate) run on a fresh engine; one results.json record."""
    load_start = load_avg()
    pin = ModelCorePin() if cfg.spec.pin_model_core else None
    pinned: dict[str, Any] = {}
    if pin is not None:
        started = on_started

        def on_started() -> None:  # the engine (and its model worker) is up: pin, then go
            pinned.update(pin.apply())
            if started is not None:
                started()

    try:
        rec = await _one_run(infra, cfg, programs, policy, rate, on_program, on_started)
    finally:
        if pin is not None:
            pin.restore()
    if pin is not None:
        rec["cpu_pin"] = pinned
    rec["load_avg_start"], rec["load_avg_end"] = load_start, load_avg()
    rec["cpu_contended"] = max(load_start, rec["load_avg_end"]) > (os.cpu_count() or 1)
    rec.pop("sim_policy", None)  # no simulator model of a real vLLM engine: no prediction
    return _label(rec, cfg.spec, is_plain(policy))


async def _one_run(
    infra: Infra,
    cfg: VllmBenchConfig,
    programs: list[Any],
    policy: str,
    rate: float,
    on_program: Callable[[ProgramRun], None] | None,
    on_started: Callable[[], None] | None,
) -> dict[str, Any]:
    """The run itself: plain vLLM in this process, or the Autellix stack."""
    if is_plain(policy):
        runs, stats = await run_plain_vllm(
            policy,
            programs,
            cfg.spec,
            call_timeout_s=cfg.call_timeout_s,
            on_program=on_program,
            on_started=on_started,
        )
        rec = plain_record(
            runs,
            stats,
            cfg.spec,
            workload=cfg.workload,
            rate=rate,
            seed=cfg.seed,
            arrival=cfg.arrival,
        )
    else:
        # the driver draws prompt ids below the model's vocabulary in both kinds of run
        with driver_vocab(cfg.spec.vocab_size):
            rec = await live_run(
                infra,
                cfg.live_config(),
                programs,
                policy,
                rate,
                on_program=on_program,
                on_started=on_started,
            )
    return rec


async def run_vllm_bench(
    cfg: VllmBenchConfig,
    workload: Workload,
    *,
    rates: Sequence[float] | None = None,
    loads: Sequence[float] = DEFAULT_LOADS,
    nats_url: str | None = None,
    database_url: str | None = None,
    callbacks: Callbacks | None = None,
    meta_extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Probe (without `rates`), run every (rate, policy), return the results.json payload."""
    import vllm

    cb = callbacks or Callbacks()
    grid = Grid(workload, cfg, rates, loads, meta_extra)
    probe: VllmProbe | None = None
    if not rates:
        cb.phase("probing the vLLM engine (decode step alone and at a full batch, prefill)")
        probe = await probe_vllm(cfg.spec, workload)
    search: SaturationSearch | None = None
    if probe is not None and cfg.capacity_search:
        estimate = capacity(workload, probe)
        cb.phase(
            f"saturation search from {estimate:.4g} programs/s (plain vLLM, rate x2 per step "
            "until latency per token doubles or throughput stops following)"
        )
        search = await search_saturation(
            cfg.spec,
            workload,
            estimate,
            seed=cfg.seed,
            arrival=cfg.arrival,
            burst_cv=cfg.burst_cv,
            max_steps=cfg.search_steps,
            on_step=lambda st: cb.phase(
                f"  {st.rate:.4g}/s: {st.avg_latency_per_token_s * 1000:.1f} ms/token, "
                f"{st.output_tokens_per_s:.1f} tokens/s, mean batch "
                + (f"{st.mean_batch:.1f}" if st.mean_batch is not None else "?")
                + f" of {cfg.spec.max_batch}"
            ),
        )
        grid.pick_rates(search.capacity)
    else:
        grid.pick_rates(capacity(workload, probe) if probe else None)
    # Servers are needed only by the Autellix runs
    need_stack = any(not is_plain(p) for p in cfg.policies)
    async with Infra(nats_url if need_stack else "", database_url if need_stack else "") as infra:

        async def one(programs: list[Any], policy: str, rate: float) -> dict[str, Any]:
            return await vllm_run(
                infra,
                cfg,
                programs,
                policy,
                rate,
                on_program=lambda _run: cb.program_done(),
                on_started=cb.stack_ready,
            )

        await grid.run(cb, one)
        servers = infra.describe() if need_stack else {}
    spec = cfg.spec
    specific = {
        "engines": 1,
        "engine": spec.describe(),
        "model": spec.model,
        "dummy_weights": dummy_weights(spec),
        "model_label": model_label(spec),
        "systems": {"plain": PLAIN_SYSTEM, "autellix": AUTELLIX_SYSTEM},
        "vllm_version": getattr(vllm, "__version__", "?"),
        "servers": servers,
    }
    probe_d = probe.as_dict() if probe else None
    payload = grid.results(
        backend="vllm", simulated=False, banner=BANNER, probe=probe_d, specific=specific
    )
    if probe is not None:
        payload["analytic_capacity_programs_per_s"] = capacity(workload, probe)
    payload["saturation"] = search.as_dict() if search is not None else None
    payload = summarize(payload)
    warning = saturation_warning(payload, is_plain)
    payload["warnings"] = [warning] if warning else []
    if warning:
        cb.phase(warning)
    return payload
