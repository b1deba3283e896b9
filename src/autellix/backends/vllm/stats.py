"""Engine statistics without polling: a vLLM stat logger that keeps the scheduler's latest figures.

vLLM calls its stat loggers on every engine step it already does, so the running/waiting counts,
KV-cache usage, prefix-cache hits and the work counters (`EngineWork` in heartbeats) cost nothing
extra to keep current.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from autellix.backends.base import WorkCounter

__all__ = ["StatsRecorder", "stat_logger_factory"]


def _cached_prompt_tokens(iteration: Any) -> int:
    """Prompt tokens of one step served from the prefix cache (vLLM's `PromptTokenStats`)."""
    stats = getattr(iteration, "prompt_token_stats", None)
    return int(getattr(stats, "cached_tokens", 0) or 0)


class StatsRecorder:
    """Latest scheduler figures, fed by vLLM's stat-logger hook on every engine step."""

    def __init__(self) -> None:
        self.running = 0
        self.waiting = 0
        self.kv_usage = 0.0
        self.prefix_queries = 0  # prompt tokens looked up in the prefix cache
        self.prefix_hits = 0
        self.updated = 0.0
        self.max_seqs = 0  # the batch limit (idle-slot steps)
        self.work = WorkCounter()  # cumulative (EngineWork in heartbeats)
        self._last_step: float | None = None  # engine-side timestamp of the previous step
        self._last_running = 0

    def step(self, running: int, waiting: int, iteration: Any) -> None:
        """Fold one engine step into the counters. A step's time is the gap since the previous
        step's timestamp when calls were running then (gaps over a second are idle time)."""
        if iteration is None:
            return
        t = float(iteration.iteration_timestamp)
        busy = 0.0
        if self._last_step is not None and self._last_running > 0 and t - self._last_step < 1.0:
            busy = max(0.0, t - self._last_step)
        self._last_step, self._last_running = t, running
        self.work.add_step(
            generated=int(iteration.num_generation_tokens),
            prompt=int(iteration.num_prompt_tokens),
            cached=_cached_prompt_tokens(iteration),
            busy_s=busy,
            running=running,
            idle=running < self.max_seqs and waiting == 0,
        )

    def record(self, scheduler_stats: Any, iteration_stats: Any) -> None:
        """One engine step's scheduler figures (vLLM's `SchedulerStats`, `IterationStats`)."""
        self.running = scheduler_stats.num_running_reqs
        self.waiting = scheduler_stats.num_waiting_reqs
        self.kv_usage = scheduler_stats.kv_cache_usage
        pc = scheduler_stats.prefix_cache_stats
        if pc is not None:
            self.prefix_queries += pc.queries
            self.prefix_hits += pc.hits
        self.updated = time.monotonic()
        self.step(self.running, self.waiting, iteration_stats)

    def factory(self) -> Any:
        """A stat-logger factory for `AsyncLLM` (vLLM builds one logger per engine core)."""
        return stat_logger_factory(self.record)


def stat_logger_factory(on_record: Callable[[Any, Any], None]) -> Any:
    """A vLLM stat-logger factory whose loggers hand each step's `(scheduler_stats,
    iteration_stats)` to `on_record` (steps without scheduler stats are skipped).

    Why one shell: vLLM's `StatLoggerBase` wants a class with its constructor and hook names;
    the backend's `StatsRecorder` and the calibration's probe differ only in what they keep."""
    from vllm.v1.metrics.loggers import StatLoggerBase

    class _Logger(StatLoggerBase):
        def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
            self.engine_index = engine_index

        def record(
            self,
            scheduler_stats: Any,
            iteration_stats: Any,
            mm_cache_stats: Any = None,
            engine_idx: int = 0,
        ) -> None:
            if scheduler_stats is not None:
                on_record(scheduler_stats, iteration_stats)

        def log_engine_initialized(self) -> None:
            return None

    return lambda vllm_config, engine_index=0: _Logger(vllm_config, engine_index)
