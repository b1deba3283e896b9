"""Engine metrics the dashboards need beyond the tracing hooks' own (see `tracing.py`).

Why a module of its own: these are facts only the engine knows (its batch size, when a call's
first token came out of the backend, how much of each prompt the prefix cache served, which calls
it failed), recorded as OpenTelemetry instruments so every exporter (Prometheus, OTLP) gets them.
`EngineTelemetry` owns one `EngineMetrics` and feeds it from its hooks; names and attributes are
listed in docs/observability.md.
"""

from __future__ import annotations

import time
from typing import Any

from autellix.runtime import telemetry

# Histogram bucket bounds, s: the OpenTelemetry GenAI conventions' advice, extended down to the
# millisecond a simulated token takes and up to the minutes a call waits under load (the SDK's
# default bounds are for milliseconds: every call would land in its first bucket).
REQUEST_S = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TOKEN_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5)
FIRST_TOKEN_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80)


class EngineMetrics:
    """Batch capacity, time to first token, prefix-cache tokens and failed calls of one engine."""

    def __init__(self, runner: Any, base: dict[str, str]) -> None:
        self.runner = runner
        self._base = base  # engine_id, backend: the attributes every engine series carries
        m = telemetry.meter("autellix.engine")
        telemetry.gauge(
            m,
            "autellix.engine.batch_capacity",
            self._capacity,
            "calls the backend's batch holds at most (occupancy = running / this)",
        )
        self.ttft = telemetry.histogram(
            m,
            "gen_ai.server.time_to_first_token",
            "call accepted by the frontend to its first generated token",
            FIRST_TOKEN_S,
        )
        self.cache_queries = telemetry.counter(
            m,
            "autellix.engine.prefix_cache.queries",
            "prompt tokens of finished calls (looked up in the prefix cache)",
            "{token}",
        )
        self.cache_hits = telemetry.counter(
            m,
            "autellix.engine.prefix_cache.hits",
            "prompt tokens of finished calls the prefix cache served",
            "{token}",
        )
        self.failed = telemetry.failed_calls_counter(m)

    def _capacity(self, _: Any) -> list[Any]:
        return [telemetry.observation(self.runner.backend.max_batch, **self._base)]

    def first_token(self, accepted_at: Any) -> None:
        """The backend produced a call's first token (`accepted_at`: the frontend's timestamp;
        one host clock per deployment, as `Timing` assumes)."""
        waited = time.time() - accepted_at.timestamp()
        self.ttft.record(max(0.0, waited), telemetry.attrs(**self._base))

    def prompt_served(self, prompt_tokens: int, cached_tokens: int | None) -> None:
        """A finished call's prompt: nothing is recorded when the backend does not report its
        cache (None), so the hit rate is over calls whose cache use is known."""
        if cached_tokens is None:
            return
        attrs = telemetry.attrs(**self._base)
        self.cache_queries.add(prompt_tokens, attrs)
        self.cache_hits.add(cached_tokens, attrs)

    def call_failed(self, code: str) -> None:
        self.failed.add(1, telemetry.attrs(**self._base, **{"error.type": code}))
