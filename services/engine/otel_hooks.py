"""Which telemetry hooks the engine runner calls: `EngineTelemetry`, or hooks that do nothing.

Why choose at all: with no OpenTelemetry SDK installed, the API's no-op spans still cost a third
of an idle engine's CPU per Dispatch taken (profiled in bench/overhead), so the runner calls
`NoTelemetry`'s empty hooks instead.
"""

from __future__ import annotations

import contextlib
from typing import Any


def otel_installed() -> bool:
    """Whether `telemetry.setup_tracing` installed an SDK tracer or meter provider (the API's
    defaults are proxies until then)."""
    from opentelemetry import metrics, trace

    no_traces = isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    no_metrics = type(metrics.get_meter_provider()).__name__ == "_ProxyMeterProvider"
    return not (no_traces and no_metrics)


class NoTelemetry:
    """`EngineTelemetry`'s hooks, doing nothing (no OpenTelemetry SDK in this process)."""

    def offered(self, call: Any) -> None:
        pass

    @contextlib.contextmanager
    def segment(self, call: Any) -> Any:
        yield None

    def preempted(self, call: Any, reason: str | None, level: int) -> None:
        pass

    def first_token(self, call: Any) -> None:
        pass

    def streamed(self, n: int) -> None:
        pass

    def finished(self, call: Any, final: Any) -> None:
        pass

    def failed(self, call: Any, code: str, message: str) -> None:
        pass

    def done(self, call: Any) -> None:
        pass
