"""Where one REAL vLLM engine saturates, found by running it, and whether a benchmark got there.

Why a search: the probe's analytic capacity (`vllm_capacity`) models a step from two points
(one call alone, a full batch of the workload's mean prompt) and misses what a real mix does
(prompts far longer or shorter than the mean, prefill-bound steps, the prefix cache): on a
prefill-heavy mix it was seen to estimate a few percent of what the engine sustained, so the
runs at "1.2x capacity" ran at a mean batch of 1.7 of 16 and measured the control plane, not
scheduling. The search starts at that estimate and runs plain vLLM (FCFS, a fresh engine per
step, short runs of the workload's own programs) at rates growing by `factor`, until the engine
saturates (`saturated`):

* latency per token reaches `latency_factor` x the first (lightest) step's, or
* throughput stops following the rate: output tokens/s grew by less than `follow` x the rate's
  growth since the previous step.

The capacity is the last rate before saturation (the first step's when it already saturates;
the last step's, flagged `bound: "lower"`, when no step does). The rules are pure functions
over the steps' numbers (`saturated`, `capacity_of`, `baseline_saturated`), unit-tested.

`baseline_saturated` reads a finished benchmark: did any baseline (plain vLLM) run reach the
regime where scheduling matters? If not, the report says so in a warning instead of letting a
ratio of unloaded runs read as a scheduling result.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from autellix.bench.plain_vllm import VllmEngineSpec, plain_record, run_plain_vllm
from autellix.workloads.arrivals import with_arrivals
from autellix.workloads.loader import Workload

#: latency per token at this multiple of the lightest step's: saturated
LATENCY_FACTOR = 2.0
#: throughput grew by less than this fraction of the rate's growth: saturated
FOLLOW = 0.8
#: a baseline run whose mean batch reaches this fraction of the engine's maximum is saturated
BATCH_FRACTION = 0.75


@dataclass(frozen=True)
class SaturationStep:
    """One plain-vLLM run of the search."""

    rate: float  # programs/s offered
    programs: int
    avg_latency_per_token_s: float
    output_tokens_per_s: float  # output tokens / makespan
    mean_batch: float | None  # calls running per engine step (vLLM's own count)
    wall_s: float


def saturated(
    steps: Sequence[SaturationStep],
    latency_factor: float = LATENCY_FACTOR,
    follow: float = FOLLOW,
) -> bool:
    """Is the engine saturated at the last of `steps` (module docstring)?"""
    if not steps:
        return False
    last, first = steps[-1], steps[0]
    if last.avg_latency_per_token_s >= latency_factor * first.avg_latency_per_token_s > 0:
        return True
    if len(steps) < 2:
        return False
    prev = steps[-2]
    if prev.rate <= 0 or prev.output_tokens_per_s <= 0:
        return False
    rate_growth = last.rate / prev.rate
    tput_growth = last.output_tokens_per_s / prev.output_tokens_per_s
    return rate_growth > 1 and tput_growth - 1 < follow * (rate_growth - 1)


def capacity_of(steps: Sequence[SaturationStep], saturated_at: int | None) -> tuple[float, str]:
    """(capacity, bound): the last rate before the saturating step ("exact"); the first step's
    rate when it saturated at once ("upper": capacity is at most this); the last rate when no
    step saturated ("lower": capacity is at least this)."""
    if not steps:
        raise ValueError("no steps")
    if saturated_at is None:
        return steps[-1].rate, "lower"
    if saturated_at == 0:
        return steps[0].rate, "upper"
    return steps[saturated_at - 1].rate, "exact"


@dataclass
class SaturationSearch:
    """The search's steps and what it concluded (recorded in results.json as `saturation`)."""

    start_rate: float
    factor: float
    steps: list[SaturationStep] = field(default_factory=list)
    saturated_at: int | None = None
    capacity: float = 0.0
    bound: str = "lower"
    wall_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            **{k: v for k, v in asdict(self).items() if k != "steps"},
            "steps": [asdict(s) for s in self.steps],
            "rule": {
                "latency_factor": LATENCY_FACTOR,
                "follow": FOLLOW,
            },
        }


def _step_programs(workload: Workload, rate: float, span_s: float, least: int) -> list[Any]:
    """The programs one step replays: as many as arrive in `span_s` at `rate` (at least
    `least`, at most the workload), so a step lasts about as long at every rate."""
    n = max(least, min(len(workload.programs), round(rate * span_s)))
    return list(workload.programs[:n])


async def search_saturation(
    spec: VllmEngineSpec,
    workload: Workload,
    start_rate: float,
    *,
    seed: int = 0,
    arrival: str = "poisson",
    burst_cv: float = 3.0,
    factor: float = 2.0,
    max_steps: int = 6,
    span_s: float = 60.0,
    least_programs: int = 8,
    on_step: Callable[[SaturationStep], None] | None = None,
) -> SaturationSearch:
    """Run plain vLLM at `start_rate` x `factor`**k until it saturates or `max_steps` ran."""
    if start_rate <= 0 or factor <= 1 or max_steps < 1:
        raise ValueError("start_rate > 0, factor > 1 and max_steps >= 1 are required")
    t0 = time.monotonic()
    out = SaturationSearch(start_rate=start_rate, factor=factor)
    rate = start_rate
    for k in range(max_steps):
        base = _step_programs(workload, rate, span_s, least_programs)
        programs = with_arrivals(base, rate, seed, arrival, burst_cv)
        runs, stats = await run_plain_vllm(
            "vllm-fcfs", programs, spec, id_prefix=f"sat{k}-{time.monotonic_ns()}-"
        )
        rec = plain_record(runs, stats, spec, workload=workload.name, rate=rate, seed=seed)
        work = (stats.engine_work or {}).get("vllm") or {}
        makespan = float(rec.get("makespan_s") or 0.0)
        step = SaturationStep(
            rate=rate,
            programs=len(programs),
            avg_latency_per_token_s=float(rec.get("avg_latency_per_token_s") or 0.0),
            output_tokens_per_s=float(rec.get("output_tokens") or 0) / makespan
            if makespan > 0
            else 0.0,
            mean_batch=work.get("mean_batch"),
            wall_s=stats.wall_s,
        )
        out.steps.append(step)
        if on_step:
            on_step(step)
        if saturated(out.steps):
            out.saturated_at = k
            break
        rate = float(f"{rate * factor:.4g}")
    out.capacity, out.bound = capacity_of(out.steps, out.saturated_at)
    out.wall_s = time.monotonic() - t0
    return out


def baseline_saturated(
    runs: Sequence[dict[str, Any]],
    max_batch: int,
    is_baseline: Callable[[str], bool],
    latency_factor: float = LATENCY_FACTOR,
    batch_fraction: float = BATCH_FRACTION,
) -> bool | None:
    """Did any baseline run reach saturation? A baseline run is saturated when its engine's
    mean batch reached `batch_fraction` of `max_batch`, or its latency per token reached
    `latency_factor` x the same baseline's at the lowest rate. None: no baseline runs."""
    base = [r for r in runs if is_baseline(str(r.get("policy")))]
    if not base:
        return None
    lightest: dict[str, float] = {}
    for r in sorted(base, key=lambda r: r["rate"]):
        lightest.setdefault(r["policy"], float(r.get("avg_latency_per_token_s") or 0.0))
    for r in base:
        work = (r.get("engine_work") or {}).get("vllm") or {}
        batch = work.get("mean_batch")
        if batch is not None and batch >= batch_fraction * max_batch:
            return True
        light = lightest[r["policy"]]
        if light > 0 and float(r.get("avg_latency_per_token_s") or 0.0) >= latency_factor * light:
            return True
    return False


def saturation_warning(payload: dict[str, Any], is_baseline: Callable[[str], bool]) -> str | None:
    """The warning a report prints when no baseline run saturated (None: one did, or none ran)."""
    max_batch = int((payload.get("meta", {}).get("engine") or {}).get("max_batch") or 0)
    if max_batch <= 0:
        return None
    verdict = baseline_saturated(payload.get("runs", []), max_batch, is_baseline)
    if verdict is not False:
        return None
    return (
        "WARNING: no baseline (plain vLLM) run saturated the engine (mean batch below "
        f"{BATCH_FRACTION:.0%} of {max_batch} and latency per token below {LATENCY_FACTOR:g}x "
        "its lightest run's at every rate): these runs measure the control plane's cost, not "
        "scheduling. Run higher --rates (or let the saturation search pick them)."
    )
