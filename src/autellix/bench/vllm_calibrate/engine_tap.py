"""What the calibration sees of one in-process vLLM engine: every engine iteration (from vLLM's
own `SchedulerIterationDetails`, through a custom stat logger, timed by the engine-side
timestamps of consecutive output batches) and every request's tokens as they come.

Engine-side times, because client receive times bunch up whenever the client process is
descheduled on a shared host; the gap between consecutive batches while the engine had work
includes scheduling and IPC overhead, which the simulator must model too.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any

from autellix.backends.vllm.stats import stat_logger_factory

RNG = random.Random(20250213)


@dataclass(slots=True)
class IterRecord:
    """One engine iteration as seen by the client."""

    t: float  # client monotonic time the iteration's outputs were processed
    dt: float | None  # engine-side gap to the previous iteration, if the engine was busy
    te: float  # engine-side monotonic time the iteration's outputs were made
    ctx_reqs: int
    ctx_tokens: int  # prefill tokens scheduled in this iteration
    gen_reqs: int  # decoding sequences in this iteration
    elapsed_ms: float  # vLLM's own timer (waits on the worker; excludes scheduling)
    context_tokens: int  # sum of context lengths of decoding sequences (client estimate)
    running: int
    waiting: int
    kv_usage: float
    tag: str


@dataclass
class Probe:
    """Shared state between the stat logger (engine side) and the experiments (client side)."""

    records: list[IterRecord] = field(default_factory=list)
    tag: str = "warmup"
    busy: bool = False  # the previous iteration left work in the engine
    last_te: float = 0.0
    engine_ts: float = 0.0  # EngineCoreOutputs.timestamp of the batch being processed
    contexts: dict[str, int] = field(default_factory=dict)  # decoding request -> context length

    def make_logger_factory(self) -> Any:
        """A vLLM stat-logger factory feeding `record`."""
        return stat_logger_factory(self.record)

    def record(self, scheduler_stats: Any, iteration_stats: Any) -> None:
        """One engine iteration: kept (unless vLLM marks it a dummy) with the engine-side gap
        to the previous one when the engine had work then."""
        now = time.perf_counter()
        te = self.engine_ts or now
        details = scheduler_stats.iteration_details
        if details is not None and not details.is_dummy:
            self.records.append(
                IterRecord(
                    t=now,
                    dt=(te - self.last_te) if self.busy else None,
                    te=te,
                    ctx_reqs=details.num_ctx_requests,
                    ctx_tokens=details.num_ctx_tokens,
                    gen_reqs=details.num_generation_requests,
                    elapsed_ms=details.elapsed_ms,
                    context_tokens=sum(self.contexts.values()),
                    running=scheduler_stats.num_running_reqs,
                    waiting=scheduler_stats.num_waiting_reqs,
                    kv_usage=scheduler_stats.kv_cache_usage,
                    tag=self.tag,
                )
            )
            self.last_te = te
        self.busy = (scheduler_stats.num_running_reqs + scheduler_stats.num_waiting_reqs) > 0

    def tap_engine_timestamps(self, engine: Any) -> None:
        """Read each output batch's engine-side timestamp (probe only, not the backend): client
        receive times bunch up whenever the client process is descheduled, engine times do not."""
        processor = engine.output_processor
        original = processor.process_outputs
        probe = self

        def tapped(outputs: Any, engine_core_timestamp: Any = None, *args: Any, **kw: Any) -> Any:
            if engine_core_timestamp:
                probe.engine_ts = engine_core_timestamp
            return original(outputs, engine_core_timestamp, *args, **kw)

        processor.process_outputs = tapped


@dataclass(slots=True)
class ReqResult:
    submit: float
    token_times: list[float]
    token_ids: list[int]
    cached: int | None
    finish: str | None


def prompt(n: int, vocab: int) -> list[int]:
    """Distinct random token ids, so unrelated requests never share a cached prefix by accident."""
    return [RNG.randrange(10, vocab - 10) for _ in range(n)]


class Runner:
    """Thin helper around one AsyncLLM for the experiments."""

    def __init__(self, engine: Any, probe: Probe, vocab: int) -> None:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        self.engine = engine
        self.probe = probe
        self.vocab = vocab
        self._sp = SamplingParams
        self._delta = RequestOutputKind.DELTA
        self._n = 0
        self.max_batched_tokens = engine.vllm_config.scheduler_config.max_num_batched_tokens

    def params(self, max_tokens: int) -> Any:
        return self._sp(
            max_tokens=max_tokens,
            ignore_eos=True,
            temperature=0.0,
            output_kind=self._delta,
            detokenize=False,
        )

    async def run(
        self,
        ids: list[int],
        max_tokens: int,
        *,
        salt: str | None = None,
        on_token: Any = None,
    ) -> ReqResult:
        self._n += 1
        rid = f"p{self._n}"
        body: dict[str, Any] = {"prompt_token_ids": ids}
        if salt is not None:
            body["cache_salt"] = salt
        res = ReqResult(time.perf_counter(), [], [], None, None)
        try:
            async for out in self.engine.generate(body, self.params(max_tokens), rid):
                now = time.perf_counter()
                if res.cached is None and out.num_cached_tokens is not None:
                    res.cached = out.num_cached_tokens
                new = list(out.outputs[0].token_ids)
                res.token_ids.extend(new)
                res.token_times.extend([now] * len(new))
                self.probe.contexts[rid] = len(ids) + len(res.token_ids)
                if out.finished:
                    res.finish = out.outputs[0].finish_reason
                if on_token is not None:
                    on_token(res)
        finally:
            self.probe.contexts.pop(rid, None)
        return res


def start_background(
    run: Runner, n: int, prompt_len: int, max_tokens: int
) -> tuple[asyncio.Event, list[asyncio.Task[None]]]:
    """`n` loops each keeping one short request decoding until the event is set."""
    stop = asyncio.Event()

    async def loop() -> None:
        while not stop.is_set():
            await run.run(prompt(prompt_len, run.vocab), max_tokens)

    return stop, [asyncio.create_task(loop()) for _ in range(n)]


def when_tokens(n: int, event: asyncio.Event, holder: dict[str, ReqResult]) -> Any:
    """An `on_token` callback: remember the result, set `event` once it has `n` tokens."""

    def on_token(res: ReqResult) -> None:
        holder["r"] = res
        if len(res.token_ids) >= n:
            event.set()

    return on_token


def steady_decode_dts(records: list[IterRecord], tag: str, batch: int) -> list[float]:
    return [
        r.dt
        for r in records
        if r.tag == tag and r.dt is not None and r.ctx_tokens == 0 and r.gen_reqs == batch
    ]
