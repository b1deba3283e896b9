"""`autellix bench live --backend vllm`: Autellix vs plain vLLM on the REAL vLLM engine.

Issue 6's benchmark, side by side in one run. Every (rate, policy) run gets a fresh engine (empty
prefix cache) and the same programs, arrival times and prompt token ids (`autellix.driver`):

* `vllm-fcfs`, `vllm-priority`: plain vLLM (`livebench.plain_vllm`): calls straight to an
  in-process `AsyncLLM`; FCFS, or vLLM `priority` = the program's attained service.
* any other name (`plas`, `atlas`, `mlfq`, `fcfs`): Autellix through the whole stack (frontend,
  scheduler `--policy NAME`, engine service `--backend vllm` with the same engine settings, NATS,
  Postgres) -- one `live.live_run`, the very code path of the simulated-engine benchmark.

Order is rate-major, so a change in the (shared) machine's load hits the policies compared at
one rate alike. Without `--rates`, a probe on a plain engine measures the decode step (alone and
at a full batch) and the prefill cost per token; the simulator's analytic capacity
(`sim.sweep.analytic_capacity`, the estimate `bench live --backend sim` uses) on that measured
profile gives the programs/s the engine sustains, and the runs go at `loads` x it.

Outputs (the format `bench/vllm/run_bench.py` always wrote): `results.json` (the `autellix sim`
run shape, one record per policy name and rate, plus `comparisons`, `sustainable`,
`throughput_at_equal_latency`), `results.md` (tables incl. baseline/Autellix ratios) and
`latency.png`. Every record, the Markdown and the plot say REAL vLLM engine, which system ran
(plain vLLM or Autellix), the model and whether its weights are dummy (random; real timing).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from autellix import callpath
from autellix.driver import ProgramRun
from autellix.livebench import repeats
from autellix.livebench.compare import SATURATION_FACTOR
from autellix.livebench.cpupin import ModelCorePin
from autellix.livebench.live import LiveConfig, live_run
from autellix.livebench.plain_vllm import (
    PLAIN_POLICIES,
    VllmEngineSpec,
    driver_vocab,
    is_plain,
    plain_record,
    run_plain_vllm,
)
from autellix.livebench.stack import Infra
from autellix.livebench.suite import DEFAULT_LOADS, Callbacks, rates_for, sweep
from autellix.protocol import EngineWork
from autellix.sim.metrics import sustainable
from autellix.sim.profile import EngineProfile
from autellix.sim.report import fmt_ratio
from autellix.sim.sweep import analytic_capacity
from autellix.workloads.loader import Workload

BANNER = "REAL vLLM engine: Autellix stack vs plain vLLM"
AUTELLIX_SYSTEM = "Autellix (frontend, scheduler, engine service) + REAL vLLM engine"
PLAIN_SYSTEM = "plain vLLM (REAL vLLM engine: AsyncLLM in the benchmark process, no Autellix)"
DEFAULT_POLICIES = ("vllm-fcfs", "vllm-priority", "plas", "atlas")
DEFAULT_MODEL = "dummy:bench"

SERVED_FRACTION = 0.9  # a baseline completing < 90% of the offered programs/s is saturated


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

    def live_config(self) -> LiveConfig:
        """The Autellix runs' `LiveConfig` (one engine: the plain runs have one vLLM engine)."""
        return LiveConfig(
            workload=self.workload,
            policies=self.policies,
            timing=self.spec,
            engines=1,
            schedulers=self.schedulers,
            seed=self.seed,
            arrival=self.arrival,
            burst_cv=self.burst_cv,
            balancer=self.balancer,
            call_timeout_s=self.call_timeout_s,
            log_dir=self.log_dir,
            extra_scheduler_args=self.extra_scheduler_args,
            ready_timeout_s=self.ready_timeout_s,
        )


# --------------------------------------------------------------------------- capacity probe


@dataclass
class VllmProbe:
    """What the probe measured on a fresh plain vLLM engine (FCFS), and the profile it implies."""

    step_alone_s: float  # one call decoding alone: seconds per token
    step_full_batch_s: float  # max_batch calls decoding together: seconds per step
    prefill_per_token_s: float  # time to first token of a lone call / its prompt tokens
    prompt_tokens: int
    decode_tokens: int
    batch: int
    kv_capacity_tokens: int | None
    startup_s: float
    wall_s: float

    def profile(self) -> EngineProfile:
        """A simulator profile with these terms (context terms folded into the measured step,
        which ran at the workload's mean prompt length)."""
        per_seq = max(0.0, (self.step_full_batch_s - self.step_alone_s) / max(1, self.batch - 1))
        return EngineProfile(
            name="vllm-probe",
            max_num_seqs=self.batch,
            kv_capacity_tokens=self.kv_capacity_tokens or 10**9,
            base_s=max(1e-6, self.step_alone_s - per_seq),
            decode_per_seq_s=per_seq,
            prefill_per_token_s=self.prefill_per_token_s,
            calibration="measured",
            source="bench live --backend vllm probe",
        )

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "profile": asdict(self.profile())}


def _mean_prompt(workload: Workload) -> int:
    calls = [c for p in workload.programs for c in p.calls]
    return int(sum(c.prompt_tokens for c in calls) / max(1, len(calls)))


async def probe_vllm(
    spec: VllmEngineSpec, workload: Workload, *, decode_tokens: int = 32
) -> VllmProbe:
    """Measure the engine (see module docstring): decode alone, decode at a full batch (prompts
    of the workload's mean length, so attention over a typical context is included) and
    prefill per token. Random prompt ids: nothing is served from the prefix cache."""
    from autellix.services.engine.backends.base import GenerationRequest

    t_start = time.monotonic()
    backend = spec.create_backend("fcfs")
    await backend.start()
    startup = time.monotonic() - t_start
    rng = random.Random(0x5EED)
    vocab = backend.vocab_size or 4096
    limit = max(16, (backend.max_model_len or 2048) - decode_tokens - 8)
    prompt_len = max(16, min(_mean_prompt(workload), limit))
    ids = iter(range(10**9))

    async def call(prompt: int, tokens: int) -> tuple[float, float]:
        """(time to first token, seconds per token after the first)."""
        req = GenerationRequest(
            request_id=f"probe-{next(ids)}",
            prompt_token_ids=[rng.randrange(100, vocab) for _ in range(prompt)],
            max_tokens=tokens,
            temperature=0.0,
            ignore_eos=True,
        )
        t0 = time.monotonic()
        first: float | None = None
        n = 0
        async with contextlib.aclosing(backend.generate(req)) as gen:
            async for chunk in gen:
                if chunk.token_ids and first is None:
                    first = time.monotonic()
                n += len(chunk.token_ids)
        end = time.monotonic()
        first = first if first is not None else end
        return first - t0, (end - first) / max(1, n - 1)

    try:
        await call(16, 4)  # warm-up (first requests pay one-off costs)
        ttft = statistics.median([(await call(prompt_len, 1))[0] for _ in range(3)])
        alone = statistics.median([(await call(prompt_len, decode_tokens))[1] for _ in range(2)])
        batch = max(1, spec.max_batch)
        full = await asyncio.gather(*(call(prompt_len, decode_tokens) for _ in range(batch)))
        step_full = statistics.median(per_token for _, per_token in full)
        kv = backend.kv_capacity_tokens
    finally:
        await backend.stop()
    return VllmProbe(
        step_alone_s=alone,
        step_full_batch_s=max(step_full, alone),
        prefill_per_token_s=max(0.0, ttft - alone) / prompt_len,
        prompt_tokens=prompt_len,
        decode_tokens=decode_tokens,
        batch=batch,
        kv_capacity_tokens=kv,
        startup_s=startup,
        wall_s=time.monotonic() - t_start,
    )


def capacity(workload: Workload, probe: VllmProbe) -> float:
    """Programs/s one engine sustains at a full batch (analytic, on the probe's profile)."""
    return analytic_capacity(workload.programs, probe.profile(), 1)


# --------------------------------------------------------------------------- runs


def _load() -> float:
    try:
        return float(os.getloadavg()[0])
    except OSError:
        return float("nan")


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
    load_start = _load()
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
    rec["load_avg_start"], rec["load_avg_end"] = load_start, _load()
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
    t_start = time.monotonic()
    load_start = _load()
    probe: VllmProbe | None = None
    cap: float | None = None
    if not rates:
        cb.phase("probing the vLLM engine (decode step alone and at a full batch, prefill)")
        probe = await probe_vllm(cfg.spec, workload)
        cap = capacity(workload, probe)
    rate_list = sorted(set(rates)) if rates else rates_for(cap or 0.0, loads)
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

        runs, failed = await sweep(workload, cfg, rate_list, cap, cb, one)
        servers = infra.describe() if need_stack else {}
    runs.sort(key=lambda r: (r["rate"], r.get("repeat") or 0, cfg.policies.index(r["policy"])))
    spec = cfg.spec
    meta = {
        "workload": workload.name,
        "programs": len(workload.programs),
        "synthetic": workload.synthetic,
        "sources": workload.sources,
        "workload_stats": workload.stats(),
        "seed": cfg.seed,
        "arrival": cfg.arrival,
        "burst_cv": cfg.burst_cv if cfg.arrival == "bursty" else None,
        "policies": cfg.policies,
        "rates": rate_list,
        "loads": list(loads) if not rates else None,
        "engines": 1,
        "schedulers": cfg.schedulers,
        "engine": spec.describe(),
        "model": spec.model,
        "dummy_weights": dummy_weights(spec),
        "model_label": model_label(spec),
        "systems": {"plain": PLAIN_SYSTEM, "autellix": AUTELLIX_SYSTEM},
        "vllm_version": getattr(vllm, "__version__", "?"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
        "cpus": os.cpu_count(),
        "servers": servers,
        "load_avg_start": load_start,
        "load_avg_end": _load(),
        "wall_s": time.monotonic() - t_start,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        **(meta_extra or {}),
    }
    payload = {
        "live": True,
        "backend": "vllm",
        "simulated": False,
        "banner": BANNER,
        "meta": meta,
        "probe": probe.as_dict() if probe else None,
        "capacity_programs_per_s": cap,
        "rates": rate_list,
        "runs": runs,
        "failed_runs": failed,
    }
    return summarize(payload)


# --------------------------------------------------------------------------- summaries


def comparisons(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per rate: each plain baseline / each Autellix policy (> 1: Autellix better)."""
    policies = list(dict.fromkeys(r["policy"] for r in runs))
    autellix = [p for p in policies if not is_plain(p)]
    lightest: dict[str, float] = {}
    for r in sorted(runs, key=lambda r: r["rate"]):
        lightest.setdefault(r["policy"], r["avg_latency_per_token_s"])
    out = []
    for rate in sorted({r["rate"] for r in runs}):
        at = {r["policy"]: r for r in runs if r["rate"] == rate}
        for base in PLAIN_POLICIES:
            for pol in autellix:
                if base not in at or pol not in at:
                    continue
                b, p = at[base], at[pol]
                growth = b["avg_latency_per_token_s"] / lightest[base] if lightest[base] else None
                # served / offered programs per second: below 90% the baseline cannot keep up
                served = b["throughput_programs_per_s"] / rate if rate else None
                out.append(
                    {
                        "rate": rate,
                        "baseline": base,
                        "policy": pol,
                        "baseline_saturated": bool(
                            (growth and growth >= SATURATION_FACTOR)
                            or (served is not None and served < SERVED_FRACTION)
                        ),
                        "baseline_latency_per_token_growth": growth,
                        "baseline_served_fraction": served,
                        "latency_per_token_ratio": b["avg_latency_per_token_s"]
                        / p["avg_latency_per_token_s"],
                        "avg_latency_ratio": b["avg_latency_s"] / p["avg_latency_s"],
                        "p95_latency_ratio": b["p95_latency_s"] / p["p95_latency_s"],
                        "p99_latency_ratio": b["p99_latency_s"] / p["p99_latency_s"],
                        "throughput_ratio": p["throughput_programs_per_s"]
                        / b["throughput_programs_per_s"],
                    }
                )
    return out


def summarize(payload: dict[str, Any]) -> dict[str, Any]:
    """(Re)compute what derives from `runs` (`bench report` calls it on old results too)."""
    runs = repeats.mean_runs(payload["runs"])  # one record per (rate, policy)
    sust = sustainable(runs, baselines=PLAIN_POLICIES) if runs else {}
    equal: dict[str, Any] = {}
    for pol, entry in (sust.get("policies") or {}).items():
        if is_plain(pol):
            continue
        for m, e in entry.items():
            for base, v in e.get("ratio_to", {}).items():
                equal.setdefault(f"{pol}/{base}", {})[m] = v
    payload.update(
        {
            "comparisons": comparisons(runs),
            "sustainable": sust,
            "throughput_at_equal_latency": equal,
            "repeat_summary": repeats.repeat_summary(payload["runs"], PLAIN_POLICIES, is_plain),
        }
    )
    return payload


# --------------------------------------------------------------------------- outputs

KEYS = (
    ("avg_latency_per_token_s", "avg s/token"),
    ("p99_latency_per_token_s", "p99 s/token"),
    ("avg_latency_s", "avg latency s"),
    ("p95_latency_s", "p95 latency s"),
    ("p99_latency_s", "p99 latency s"),
    ("throughput_programs_per_s", "programs/s"),
    ("cache_hit_rate", "cache hit"),
    ("preemptions", "preemptions"),
    ("failed_calls", "failed calls"),
)


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def run_rows(payload: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """One row per (rate, policy): system, the paper's metrics, failures, load average."""
    several = repeats.repeat_count(payload["runs"]) > 1
    header = [
        "rate",
        *(["repeat"] if several else []),
        "policy",
        "system",
        *(label for _, label in KEYS),
        "engine ms/step",
        "mean batch",
        "load avg",
    ]
    rows = []
    for r in payload["runs"]:
        work = engine_work_total(r)
        rows.append(
            [
                f"{r['rate']:g}",
                *([str(r.get("repeat", 0))] if several else []),
                r["policy"],
                "plain vLLM" if r.get("plain_vllm") else "Autellix",
                *(_cell(r.get(k)) for k, _ in KEYS),
                f"{work['step_ms']:.1f}" if work else "-",
                f"{work['mean_batch']:.2f}" if work else "-",
                f"{r.get('load_avg_start', float('nan')):.1f}-"
                f"{r.get('load_avg_end', float('nan')):.1f}",
            ]
        )
    return header, rows


def engine_work_total(rec: dict[str, Any]) -> dict[str, float | int] | None:
    """A run's engine work over all its engines (`engine_work`: per engine id), or None for
    runs that did not count it (older results, sim engines)."""
    per = rec.get("engine_work") or {}
    if not per:
        return None
    total = {k: sum(w[k] for w in per.values()) for k in EngineWork.model_fields}
    return EngineWork(**total).summary()


def ratio_rows(payload: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Baseline / Autellix per rate (> 1: Autellix better; throughput Autellix / baseline)."""
    header = [
        "rate",
        "baseline (plain vLLM)",
        "saturated",
        "Autellix policy",
        "avg s/token",
        "avg latency",
        "p95 latency",
        "p99 latency",
        "throughput",
    ]
    rows = []
    for c in payload.get("comparisons") or []:
        growth = c.get("baseline_latency_per_token_growth")
        rows.append(
            [
                f"{c['rate']:g}",
                c["baseline"],
                ("yes" if c.get("baseline_saturated") else "no")
                + (f" ({growth:.1f}x" if growth else " (")
                + (
                    f", serves {c['baseline_served_fraction']:.0%} of the offered rate)"
                    if c.get("baseline_served_fraction") is not None
                    else ")"
                ),
                c["policy"],
                f"{c['latency_per_token_ratio']:.2f}x",
                f"{c['avg_latency_ratio']:.2f}x",
                f"{c['p95_latency_ratio']:.2f}x" if "p95_latency_ratio" in c else "-",
                f"{c['p99_latency_ratio']:.2f}x",
                f"{c['throughput_ratio']:.2f}x" if "throughput_ratio" in c else "-",
            ]
        )
    return header, rows


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def markdown(payload: dict[str, Any]) -> str:
    """results.md: setup, every run, baseline/Autellix ratios, throughput at equal latency."""
    meta = payload["meta"]
    eng = meta["engine"]
    probe = payload.get("probe")
    lines = [
        f"# {BANNER}",
        "",
        f"**REAL vLLM engine** ({meta['vllm_version']}) on {meta['machine']}; "
        f"{meta.get('model_label') or model_label(eng)}; batch {eng['max_batch']}, "
        f"max model length {eng.get('max_model_len')}, KV {eng.get('kv_cache_gib')} GiB, "
        f"prefix caching on for every policy; Autellix engine `queue_ahead` "
        f"{eng.get('queue_ahead', 0)}"
        + (f"; vLLM processes at nice {eng['nice']}" if eng.get("nice") is not None else "")
        + (
            "; everything but vLLM's model worker kept off its core (`--pin-model-core`)."
            if eng.get("pin_model_core")
            else "."
        ),
        "",
        f"- plain vLLM (`vllm-fcfs`, `vllm-priority`): {PLAIN_SYSTEM}",
        f"- Autellix (every other policy): {AUTELLIX_SYSTEM}",
        "",
        f"Workload `{meta['workload']}` ({meta['programs']} programs, {meta['arrival']} "
        f"arrivals, seed {meta['seed']}); every run on a fresh engine with the same programs, "
        f"arrival times and prompt token ids. Wall {meta['wall_s'] / 60:.1f} min, load average "
        f"{meta['load_avg_start']:.1f} -> {meta['load_avg_end']:.1f}.",
        "",
        f"Command: `{meta.get('command', '')}`",
    ]
    if probe and payload.get("capacity_programs_per_s"):
        lines += [
            "",
            f"Capacity {payload['capacity_programs_per_s']:.4g} programs/s (analytic, on the "
            f"probe's measured profile: decode {probe['step_alone_s'] * 1000:.1f} ms/token alone, "
            f"{probe['step_full_batch_s'] * 1000:.1f} ms/step at batch {probe['batch']}, prefill "
            f"{probe['prefill_per_token_s'] * 1000:.3f} ms/token at {probe['prompt_tokens']}-token"
            f" prompts); rates = {meta.get('loads')} x capacity.",
        ]
    lines += ["", "## Runs", "", *_md_table(*run_rows(payload))]
    summary = payload.get("repeat_summary")
    if summary:
        lines += [
            "",
            f"## Repeats ({summary['repeats']} of every run, policies in rotated order)",
            "",
            "Mean ± standard deviation (min-max) over the repeats; the ratio tables below "
            "compare these means.",
            "",
            *_md_table(*repeats.summary_rows(summary)),
            "",
            "Baseline / Autellix of the means, then each repeat's own ratio (its runs ran "
            "back to back), and in how many repeats Autellix was better:",
            "",
            *_md_table(*repeats.ratio_rows(summary)),
        ]
    if payload.get("comparisons"):
        lines += [
            "",
            "## Ratios: plain vLLM baseline / Autellix (> 1 means Autellix is better; "
            "throughput: Autellix / baseline)",
            "",
            "A baseline is *saturated* at a rate once its average latency per token is "
            f"{SATURATION_FACTOR:g}x its value at the lightest rate, or it completes fewer than "
            f"{SERVED_FRACTION:.0%} of the offered programs per second.",
            "",
            *_md_table(*ratio_rows(payload)),
        ]
    equal = payload.get("throughput_at_equal_latency") or {}
    if equal and len(payload.get("rates") or []) >= 2:
        lines += [
            "",
            "## Throughput at equal latency (sustainable-rate ratio Autellix / baseline)",
            "",
            "L* = m x the lowest average latency per token at the lightest rate; `>=`/`<=` "
            f"mark bounds ({len(payload.get('rates') or [])} rates: coarse).",
            "",
        ]
        ms = sorted({m for v in equal.values() for m in v}, key=float)
        rows = [
            [pair, *(fmt_ratio(v[m]["ratio"], v[m]["bound"]) if m in v else "-" for m in ms)]
            for pair, v in equal.items()
        ]
        lines += _md_table(["Autellix / baseline", *(f"m={m}" for m in ms)], rows)
    kinds = sorted({k for r in payload["runs"] for k in (r.get("per_kind") or {})})
    if len(kinds) > 1:
        lines += ["", "## Average program latency (s) per kind", ""]
        rows = []
        for r in payload["runs"]:
            pk = r.get("per_kind") or {}
            rows.append(
                [
                    f"{r['rate']:g}",
                    r["policy"],
                    *(f"{pk[k]['avg_latency_s']:.3g}" if k in pk else "-" for k in kinds),
                ]
            )
        lines += _md_table(["rate", "policy", *kinds], rows)
    if any(r.get("call_path") for r in payload["runs"]):
        lines += [
            "",
            "## Where a call's time goes (ms per call, mean / p90)",
            "",
            callpath.TABLE_NOTE,
            "",
            *_md_table(*callpath.table_rows(payload["runs"])),
        ]
    for f in payload.get("failed_runs") or []:
        lines += ["", f"**Run failed**: {f['policy']} @ {f['rate']:g}/s: `{f['error'][:300]}`"]
    return "\n".join(lines) + "\n"


def plot(payload: dict[str, Any], path: Path) -> None:
    """Latency per token, average and p99 program latency vs rate: Autellix solid, plain dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = repeats.mean_runs(payload["runs"])  # means over repeats, if any
    meta = payload["meta"]
    policies = list(dict.fromkeys(r["policy"] for r in runs))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    for ax, (key, label) in zip(
        axes,
        [
            ("avg_latency_per_token_s", "avg latency per output token (s)"),
            ("avg_latency_s", "avg program latency (s)"),
            ("p99_latency_s", "p99 program latency (s)"),
        ],
        strict=True,
    ):
        for pol in policies:
            pts = sorted((r["rate"], r[key]) for r in runs if r["policy"] == pol)
            style = "--" if is_plain(pol) else "-"
            name = f"{pol} (plain vLLM)" if is_plain(pol) else f"{pol} (Autellix)"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker="o", label=name)
        ax.set_xlabel("program arrival rate (programs/s)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    eng = meta["engine"]
    label = meta.get("model_label") or model_label(eng)
    fig.suptitle(
        f"REAL vLLM engine ({label}, batch {eng['max_batch']}):"
        f" Autellix (solid) vs plain vLLM (dashed), workload {meta['workload']}"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(payload: dict[str, Any], out: Path) -> dict[str, Path]:
    """results.json, results.md and latency.png in `out`; returns their paths."""
    from autellix.sim.report import write_json

    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out / "results.json",
        "md": out / "results.md",
        "png": out / "latency.png",
    }
    write_json(paths["json"], payload)
    paths["md"].write_text(markdown(payload))
    plot(payload, paths["png"])
    return paths


def rich_tables(payload: dict[str, Any]) -> list[Any]:
    """Console tables: every run, and baseline / Autellix ratios."""
    from rich.table import Table

    tables = []
    sections = [(f"{BANNER}: runs", run_rows(payload))]
    if payload.get("comparisons"):
        sections.append((f"{BANNER}: plain vLLM / Autellix", ratio_rows(payload)))
    for title, (header, rows) in sections:
        t = Table(title=title)
        for h in header:
            t.add_column(h, justify="left" if h in ("policy", "system") else "right")
        for row in rows:
            t.add_row(*row)
        tables.append(t)
    return tables
