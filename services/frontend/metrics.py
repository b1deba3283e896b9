"""The frontend's `/metrics` series (prefix `autellix:`, as vLLM's are `vllm:`), on by default.

Why the frontend serves them itself: a user who starts a stack and points Prometheus at the HTTP
port should get queue depths and latencies without configuring OpenTelemetry first. Everything
here comes from what the frontend already sees, so nothing new crosses the bus:

* **engine gauges** (queue depth per MLFQ level, running and waiting calls, batch capacity, KV
  cache use) are read at scrape time from the heartbeats every engine publishes each second
  (`live_engines.EngineDirectory`);
* **call series** (time to first token, end-to-end latency, preemptions, per engine) are
  recorded when this frontend answers an HTTP call, from the call's final answer;
* **program series** (latency, latency per output token) are recorded when a program closes,
  which every program does through a frontend (`tracing.ProgramTelemetry.closed`).

The OpenTelemetry instruments (`autellix_program_duration_seconds`, the engines' own
`autellix_engine_*`) are unchanged: with `OTEL_METRICS_EXPORTER=prometheus` they are appended to
the same page. The histogram bounds are explicit because the OpenTelemetry SDK's defaults (0, 5,
10, ... 10000) are meant for milliseconds: in seconds every program would fall in the first
bucket or two and a dashboard's percentiles would be meaningless.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from autellix.wire.protocol import CallFinal, EngineHeartbeat

PROGRAM_S = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)
PROGRAM_PER_TOKEN_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
TTFT_S = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80)
CALL_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 60, 120, 300, 600)
PREFIX = "autellix:"
ENGINE_LABELS = ("engine_id", "backend")


class EngineGauges(Collector):
    """Gauges of the live engines, built at each scrape from their latest heartbeats (an engine
    unheard for a few seconds drops out, as it does from `/v1/models`)."""

    def __init__(self, live: Callable[[], Iterable[EngineHeartbeat]]) -> None:
        self._live = live
        self._levels: dict[str, int] = {}  # levels seen per engine: a drained queue reads 0

    def collect(self) -> Iterator[Metric]:
        live = list(self._live())
        depth = GaugeMetricFamily(
            PREFIX + "engine_queue_depth",
            "calls waiting in the engine's queue of each MLFQ level",
            labels=[*ENGINE_LABELS, "level"],
        )
        per_engine = {
            "engine_running": ("calls running in the engine's batch", lambda hb: hb.running),
            "engine_waiting": ("calls waiting in the engine (all levels)", lambda hb: hb.waiting),
            "engine_batch_capacity": ("calls the batch holds at most", lambda hb: hb.max_batch),
            "engine_kv_cache_usage": (
                "fraction of the KV cache in use",
                lambda hb: hb.kv_cache_usage,
            ),
            "engine_draining": ("1 while the engine shuts down", lambda hb: int(hb.draining)),
        }
        families = {
            name: (GaugeMetricFamily(PREFIX + name, text, labels=ENGINE_LABELS), value)
            for name, (text, value) in per_engine.items()
        }
        for hb in live:
            key = [hb.engine_id, hb.backend]
            # a heartbeat lists levels up to the last non-empty one; every level seen so far is
            # reported (0 when empty, as the engine's own gauge does), level 0 always
            levels = max(self._levels.get(hb.engine_id, 1), len(hb.queue_depths))
            self._levels[hb.engine_id] = levels
            depths = [*hb.queue_depths, *[0] * (levels - len(hb.queue_depths))]
            for level, n in enumerate(depths):
                depth.add_metric([*key, str(level)], n)
            for family, value in families.values():
                family.add_metric(key, value(hb))
        engines = GaugeMetricFamily(PREFIX + "engines_live", "engines heard from lately")
        engines.add_metric([], len(live))
        yield engines
        yield depth
        for family, _ in families.values():
            yield family


class FrontendMetrics:
    """The registry behind `/metrics` and the instruments the frontend records into."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.ttft = Histogram(
            PREFIX + "time_to_first_token_seconds",
            "HTTP request received to its first token reaching the frontend",
            ENGINE_LABELS, buckets=TTFT_S, registry=r,
        )  # fmt: skip
        self.e2e = Histogram(
            PREFIX + "e2e_request_latency_seconds",
            "HTTP request received to its final answer",
            ENGINE_LABELS, buckets=CALL_S, registry=r,
        )  # fmt: skip
        self.preemptions = Counter(
            PREFIX + "preemptions",
            "times the calls answered here were preempted on their engine",
            ENGINE_LABELS, registry=r,
        )  # fmt: skip
        self.calls = Counter(
            PREFIX + "calls_finished",
            "calls answered here with a final answer",
            ENGINE_LABELS, registry=r,
        )  # fmt: skip
        self.program = Histogram(
            PREFIX + "program_latency_seconds",
            "program open to close", buckets=PROGRAM_S, registry=r,
        )  # fmt: skip
        self.program_per_token = Histogram(
            PREFIX + "program_latency_per_token_seconds",
            "program latency divided by its output tokens (the metric the schedulers minimise)",
            buckets=PROGRAM_PER_TOKEN_S, registry=r,
        )  # fmt: skip
        self._engines: EngineGauges | None = None

    def watch_engines(self, live: Callable[[], Iterable[EngineHeartbeat]]) -> None:
        """Serve the engine gauges from ``live`` (the frontend's engine directory)."""
        if self._engines is not None:
            self.registry.unregister(self._engines)
        self._engines = EngineGauges(live)
        self.registry.register(self._engines)

    def call_finished(self, final: CallFinal, e2e_s: float, ttft_s: float | None) -> None:
        """One HTTP call's final answer: its latency, first-token time and preemptions."""
        key = (final.engine.engine_id, final.engine.backend)
        self.calls.labels(*key).inc()
        self.e2e.labels(*key).observe(e2e_s)
        if ttft_s is not None:
            self.ttft.labels(*key).observe(ttft_s)
        if final.preemptions:
            self.preemptions.labels(*key).inc(final.preemptions)

    def program_closed(self, duration_s: float, completion_tokens: int) -> None:
        self.program.observe(duration_s)
        if completion_tokens > 0:
            self.program_per_token.observe(duration_s / completion_tokens)

    def exposition(self, extra: bytes = b"") -> bytes:
        """This registry in Prometheus text format, followed by ``extra`` (the OpenTelemetry
        exporter's page, when that is on)."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry) + extra


_instance: FrontendMetrics | None = None


def frontend_metrics() -> FrontendMetrics:
    """The process's one `FrontendMetrics` (instruments may be registered only once)."""
    global _instance
    if _instance is None:
        _instance = FrontendMetrics()
    return _instance


def prometheus_page(otel_page: tuple[bytes, str] | None) -> tuple[bytes, str]:
    """The `/metrics` body and content type: the `autellix:` series, then OpenTelemetry's."""
    from prometheus_client import CONTENT_TYPE_LATEST

    extra = otel_page[0] if otel_page is not None else b""
    return frontend_metrics().exposition(extra), CONTENT_TYPE_LATEST


__all__ = [
    "PROGRAM_PER_TOKEN_S",
    "PROGRAM_S",
    "EngineGauges",
    "FrontendMetrics",
    "frontend_metrics",
    "prometheus_page",
]
