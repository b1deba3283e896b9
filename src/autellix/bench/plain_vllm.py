"""Plain-vLLM baselines for `bench live --backend vllm`: the same programs, arrivals and metrics
as the Autellix runs, with every call sent straight to vLLM's `AsyncLLM` (no Autellix stack).

Two baselines (issue 6, "Benchmark"):

* `vllm-fcfs`: vLLM as people run it -- `scheduling_policy="fcfs"`, prefix caching on, every
  call submitted the moment the program issues it (vLLM queues what does not fit the batch).
* `vllm-priority`: the cheap program-aware approach -- `scheduling_policy="priority"` and each
  call's vLLM `priority` set, client-side, to its program's *attained service* (output tokens of
  the program's finished calls, i.e. PLAS computed by the caller). vLLM orders its waiting queue
  by it but never preempts a running request for a better one at a full batch (vllm#40004), and
  a priority fixed at submission cannot demote a call while it runs.

Why the programs run through `bench.driver.run_workload`: the driver is what the Autellix runs
use, so prompts (token ids, including each call's real prefix reuse of its parent's context),
call order, tool delays and arrival times are identical by construction. A small duck-typed
client (`PlainClient`) stands in for `autellix.client.Client`, and answers with the same
`CallResult` objects. The engine is `VllmBackend` -- the very backend the Autellix engine service
runs -- built from one `VllmEngineSpec`, so both sides get identical engine settings; only the
scheduling in front of vLLM differs. A fresh engine per run (empty prefix cache), as the Autellix
runs get a fresh stack.

Hook for the `bench live` CLI: `is_plain(policy)`, `run_plain_vllm(...)` (returns the driver's
`ProgramRun`s and `PlainStats`) and `plain_record(...)` (one results.json `runs` entry, the shape of
`autellix sim`'s). `VllmEngineSpec.engine_args()` gives the engine-service flags for the Autellix
runs (duck-typed like `SimEngineTiming.engine_args()`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import itertools
import json
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from autellix.bench import callpath, driver
from autellix.bench.driver import ProgramRun
from autellix.client import CallFailed, CallResult
from autellix.sim.metrics import run_record
from autellix.sim.results import ProgramOutcome, SimRun
from autellix.wire.protocol import CallError, EngineInfo, ErrorCode, SamplingParams, Timing, Usage
from autellix.workloads.types import ProgramSpec

PLAIN_POLICIES = ("vllm-fcfs", "vllm-priority")
ENGINES_LABEL = "plain vLLM (AsyncLLM in the benchmark process; no Autellix stack)"
PLAIN_ENGINE_ID = "plain-vllm"


def is_plain(policy: str) -> bool:
    """Whether `policy` is a plain-vLLM baseline (run here, not through the stack)."""
    return policy in PLAIN_POLICIES


@dataclass(frozen=True)
class VllmEngineSpec:
    """One vLLM engine's settings, shared by the plain-vLLM runs and the Autellix engine service.

    `kv_cache_gib` sizes the KV cache explicitly (what CPUs need); `options` are further
    `VllmBackendConfig` fields as strings (`--opt key=value` of the engine service).
    """

    backend: ClassVar[str] = "vllm"

    model: str = "dummy:bench"
    max_batch: int = 16
    max_model_len: int | None = 4096
    kv_cache_gib: float | None = 1.0
    dtype: str = "auto"
    load_format: str = "auto"
    enable_prefix_caching: bool = True
    model_dir: str | None = None
    # Autellix engine only: calls kept resident in vLLM's waiting queue beyond the batch, so a
    # freed slot is refilled in the same step (plain vLLM queues everything there anyway)
    queue_ahead: int = 0
    nice: int | None = None  # renice vLLM's processes (both sides): a dedicated "device" core
    # benchmark runs: everything but vLLM's model worker off its core, both sides (cpupin.py)
    pin_model_core: bool = False
    options: tuple[tuple[str, str], ...] = ()
    delta_interval_s: float = 0.1  # engine service: token deltas per call at most every 0.1 s
    extra_args: tuple[str, ...] = ()  # more engine-service flags

    def backend_options(self, scheduling_policy: str = "priority") -> dict[str, Any]:
        """Keyword options for `backends.vllm.create` (what both sides run)."""
        opts: dict[str, Any] = {
            "model": self.model,
            "max_batch": self.max_batch,
            "dtype": self.dtype,
            "load_format": self.load_format,
            "enable_prefix_caching": self.enable_prefix_caching,
            "scheduling_policy": scheduling_policy,
        }
        if self.max_model_len:
            opts["max_model_len"] = self.max_model_len
        if self.kv_cache_gib is not None:
            opts["kv_cache_gib"] = self.kv_cache_gib
        if self.model_dir:
            opts["model_dir"] = self.model_dir
        if self.queue_ahead:
            opts["queue_ahead"] = self.queue_ahead
        if self.nice is not None:
            opts["nice"] = self.nice
        opts.update(dict(self.options))
        return opts

    def engine_args(self) -> list[str]:
        """Flags for `python -m autellix.services.engine` after `--backend vllm --max-batch N`
        (the Autellix runs; vLLM `priority` carries the MLFQ level there)."""
        args = ["--model", self.model]
        if self.max_model_len:
            args += ["--max-model-len", str(self.max_model_len)]
        opts = self.backend_options("priority")
        for key in ("model", "max_batch", "max_model_len", "scheduling_policy"):
            opts.pop(key, None)
        for key, value in opts.items():
            text = str(value).lower() if isinstance(value, bool) else str(value)
            args += ["--opt", f"{key}={text}"]
        args += ["--delta-interval", repr(self.delta_interval_s), *self.extra_args]
        return args

    def create_backend(self, scheduling_policy: str) -> Any:
        """A `VllmBackend` with these settings (not started)."""
        from autellix.backends.vllm import create

        return create(**self.backend_options(scheduling_policy))

    @property
    def vocab_size(self) -> int | None:
        """The model's vocabulary size when it can be known without starting vLLM."""
        from autellix.backends.tinymodel import PRESETS

        if self.model.startswith("dummy:"):
            shape = PRESETS.get(self.model.removeprefix("dummy:"))
            return shape.vocab_size if shape else None
        config = Path(self.model) / "config.json"
        if config.is_file():
            return int(json.loads(config.read_text()).get("vocab_size") or 0) or None
        return None

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, **dataclasses.asdict(self)}


# --------------------------------------------------------------------------- the client stand-in


@dataclass
class PlainStats:
    """What a plain-vLLM run reports besides the programs."""

    policy: str
    startup_s: float = 0.0
    wall_s: float = 0.0
    calls: int = 0
    failed_calls: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    max_priority: int = 0
    per_program: dict[str, dict[str, float]] = field(default_factory=dict)
    engine_work: dict[str, Any] | None = None  # {"vllm": EngineWork.summary()} at the end

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("per_program")
        d.pop("engine_work")  # its own field of the run record
        return d


class PlainClient:
    """Duck-typed `autellix.client.Client` for `driver.run_workload`: calls go to `backend`."""

    def __init__(self, backend: Any, policy: str, stats: PlainStats) -> None:
        if not is_plain(policy):
            raise ValueError(f"{policy!r} is not a plain-vLLM policy ({', '.join(PLAIN_POLICIES)})")
        self.backend = backend
        self.policy = policy
        self.stats = stats
        self.engine = EngineInfo(engine_id=PLAIN_ENGINE_ID, backend="vllm", model=backend.model)
        self._ids = itertools.count()

    def program(self, program_id: str, *, metadata: dict[str, str] | None = None) -> PlainProgram:
        return PlainProgram(self, program_id)


class PlainProgram:
    """A program's attained service lives here (what `vllm-priority` computes client-side)."""

    def __init__(self, client: PlainClient, program_id: str) -> None:
        self.client = client
        self.program_id = program_id
        self.service = 0  # output tokens of this program's finished calls

    async def __aenter__(self) -> PlainProgram:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def thread(self, name: str) -> PlainThread:
        return PlainThread(self, name)


class PlainThread:
    def __init__(self, program: PlainProgram, thread_id: str) -> None:
        self.program = program
        self.thread_id = thread_id

    async def call(
        self,
        *,
        prompt_token_ids: Sequence[int],
        max_tokens: int,
        sampling: dict[str, Any] | None = None,
        parents: Sequence[str] | None = None,
        client_call_id: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the driver's per-call deadline
    ) -> CallResult:
        """One call straight to vLLM; the same `CallResult` the Autellix client returns."""
        del parents  # vLLM has no notion of them (that is the point of the baseline)
        try:
            return await asyncio.wait_for(
                self._call(list(prompt_token_ids), max_tokens, sampling or {}, client_call_id),
                timeout,
            )
        except TimeoutError as exc:
            raise CallFailed(
                CallError(code=ErrorCode.timeout, message=f"no answer within {timeout} s")
            ) from exc

    async def _call(
        self, prompt: list[int], max_tokens: int, sampling: dict[str, Any], tag: str | None
    ) -> CallResult:
        from autellix.backends.base import BackendError, GenerationRequest

        client, program = self.program.client, self.program
        sp = SamplingParams(**{**sampling, "max_tokens": max_tokens})
        priority = program.service if client.policy == "vllm-priority" else 0
        client.stats.max_priority = max(client.stats.max_priority, priority)
        call_id = f"{program.program_id}:{tag or 'c'}:{next(client._ids)}"
        req = GenerationRequest(
            request_id=call_id,
            prompt_token_ids=prompt,
            max_tokens=sp.max_tokens,
            temperature=sp.temperature,
            top_p=sp.top_p,
            seed=sp.seed,
            stop_token_ids=list(sp.stop_token_ids),
            ignore_eos=sp.ignore_eos,
            priority=priority,
        )
        accepted_at = datetime.now(UTC)
        t0 = time.monotonic()
        first: float | None = None
        tokens: list[int] = []
        cached = 0
        finish = "length"
        client.stats.calls += 1
        try:
            async with contextlib.aclosing(client.backend.generate(req)) as gen:
                async for chunk in gen:
                    if chunk.cached_prompt_tokens is not None:
                        cached = chunk.cached_prompt_tokens
                    if chunk.token_ids and first is None:
                        first = time.monotonic()
                    tokens.extend(chunk.token_ids)
                    finish = chunk.finish_reason or finish
        except BackendError as exc:
            client.stats.failed_calls += 1
            code = ErrorCode(exc.code) if exc.code in ErrorCode.__members__ else ErrorCode.internal
            raise CallFailed(CallError(call_id=call_id, code=code, message=exc.message)) from exc
        end = time.monotonic()
        program.service += len(tokens)
        client.stats.prompt_tokens += len(prompt)
        client.stats.cached_tokens += cached
        per = client.stats.per_program.setdefault(
            program.program_id, {"prompt_tokens": 0, "cached_tokens": 0, "run_s": 0.0}
        )
        per["prompt_tokens"] += len(prompt)
        per["cached_tokens"] += cached
        first = first if first is not None else end
        per["run_s"] += end - first
        finished_at = datetime.now(UTC)
        return CallResult(
            call_id=call_id,
            program_id=program.program_id,
            thread_id=self.thread_id,
            token_ids=tokens,
            text=None,
            finish_reason=finish,
            usage=Usage(
                prompt_tokens=len(prompt), completion_tokens=len(tokens), cached_tokens=cached
            ),
            # vLLM does not say when it admitted a request: "queue" is submit -> first token
            # (it includes the prefill), "run" is first token -> last
            timing=Timing(
                accepted_at=accepted_at,
                finished_at=finished_at,
                queue_s=first - t0,
                run_s=end - first,
            ),
            engine=client.engine,
            latency_s=end - t0,
            first_token_s=first - t0,
        )


# --------------------------------------------------------------------------- runs


@contextlib.contextmanager
def driver_vocab(vocab: int | None) -> Iterator[dict[str, Any]]:
    """Keyword arguments that make the driver draw prompt ids below `vocab`.

    The driver draws fresh prompt ids from [100, driver.VOCAB); a dummy model's vocabulary can be
    smaller (dummy:bench has 8,192), and vLLM rejects out-of-vocabulary ids. If `run_workload`
    takes a `vocab` argument it is used; otherwise `driver.VOCAB` is lowered for the duration.
    Both the Autellix and the plain-vLLM runs of one benchmark must use the same value.
    """
    if vocab is None or vocab >= driver.VOCAB:
        yield {}
        return
    if "vocab" in inspect.signature(driver.run_workload).parameters:
        yield {"vocab": vocab}
        return
    saved = driver.VOCAB
    driver.VOCAB = vocab
    try:
        yield {}
    finally:
        driver.VOCAB = saved


async def run_plain_vllm(
    policy: str,
    programs: list[ProgramSpec],
    spec: VllmEngineSpec,
    *,
    call_timeout_s: float = 900.0,
    on_program: Callable[[ProgramRun], None] | None = None,
    on_started: Callable[[], None] | None = None,
    id_prefix: str | None = None,
) -> tuple[list[ProgramRun], PlainStats]:
    """Start a fresh vLLM engine, replay `programs` (arrival times already set) against it
    under `policy` ("vllm-fcfs" or "vllm-priority"), stop the engine; runs and stats."""
    if not is_plain(policy):
        raise ValueError(f"{policy!r} is not a plain-vLLM policy ({', '.join(PLAIN_POLICIES)})")
    backend = spec.create_backend("fcfs" if policy == "vllm-fcfs" else "priority")
    stats = PlainStats(policy=policy)
    t0 = time.monotonic()
    await backend.start()
    stats.startup_s = time.monotonic() - t0
    try:
        if on_started:
            on_started()
        client = PlainClient(backend, policy, stats)
        with driver_vocab(backend.vocab_size) as extra:
            runs, wall = await driver.run_workload(
                client,  # type: ignore[arg-type]  # duck-typed Client
                programs,
                call_timeout=call_timeout_s,
                on_program=on_program,
                id_prefix=id_prefix if id_prefix is not None else f"p{uuid.uuid4().hex[:8]}-",
                **extra,
            )
        stats.wall_s = wall
        work = backend.stats().work
        stats.engine_work = {"vllm": work.summary()} if work is not None else None
    finally:
        await backend.stop()
    return runs, stats


def outcomes(runs: list[ProgramRun], stats: PlainStats) -> list[ProgramOutcome]:
    """The driver's runs as the simulator's `ProgramOutcome`s (so the same metrics apply)."""
    out = []
    for r in runs:
        per = stats.per_program.get(r.program_id, {})
        run_s, cached, prompt = (per.get(k, 0) for k in ("run_s", "cached_tokens", "prompt_tokens"))
        out.append(r.outcome(float(run_s), 0, int(cached), int(prompt)))
    return out


def plain_record(
    runs: list[ProgramRun],
    stats: PlainStats,
    spec: VllmEngineSpec,
    *,
    workload: str,
    rate: float,
    seed: int = 0,
    arrival: str = "poisson",
) -> dict[str, Any]:
    """One results.json `runs` entry for a plain-vLLM run (the shape `autellix sim` writes)."""
    outs = outcomes(runs, stats)
    run = SimRun(
        policy=stats.policy,
        programs=outs,
        makespan_s=stats.wall_s,
        preemptions=0,  # not visible from outside vLLM (its own KV-pressure recomputes)
        engine_utilization=[],
        cache_hit_rate=stats.cached_tokens / max(1, stats.prompt_tokens),
        stats={"engine_startup_s": stats.startup_s},
        simulated=False,
    )
    rec = run_record(
        run, workload=workload, rate=rate, engines=1, schedulers=0, arrival=arrival, seed=seed
    )
    rec.update(
        {
            "live": True,
            "backend": "vllm",
            "simulated": False,
            "engines_label": ENGINES_LABEL,
            "policy_applied": True,
            "plain_vllm": True,
            "engine": spec.describe(),
            "failed_calls": sum(r.failed_calls for r in runs),
            "failed_programs": sum(1 for r in runs if not r.ok),
            "errors": [e for r in runs for e in r.errors][:10],
            "wall_s": stats.wall_s,
            "plain_stats": stats.as_dict(),
            "engine_work": stats.engine_work,
            "call_path": callpath.summarize(p for r in runs for p in r.paths),
        }
    )
    return rec
