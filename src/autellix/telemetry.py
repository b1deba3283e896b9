"""Logging and tracing set-up shared by every service process.

Why structlog JSON: service output is read by machines (the supervisor's readiness checks, the
tests' log assertions, log shippers) as often as by people, so every line is one JSON object with
`service`, `event`, `level` and `ts`. `AUTELLIX_LOG_FORMAT=console` switches to a readable format
for local debugging; `AUTELLIX_LOG_LEVEL` sets the threshold (default info).

Tracing is OpenTelemetry, and free when unused: without `OTEL_EXPORTER_OTLP_ENDPOINT` (or
`OTEL_TRACES_EXPORTER`) the API's no-op tracer is used and `inject`/`extract` cost a dict lookup.
The W3C `traceparent` travels in NATS headers (core messages) and in `Dispatch.trace`
(JetStream payloads), so one trace follows a call from the client through every service.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import Any

import structlog

_configured = False


def setup_logging(service: str, level: str | None = None) -> structlog.stdlib.BoundLogger:
    """Configure structlog once per process and return a logger bound to `service`."""
    global _configured
    level_name = (level or os.environ.get("AUTELLIX_LOG_LEVEL", "info")).upper()
    lvl = getattr(logging, level_name, logging.INFO)
    if not _configured:
        renderer: Any
        if os.environ.get("AUTELLIX_LOG_FORMAT", "json") == "console":
            renderer = structlog.dev.ConsoleRenderer(colors=False)
        else:
            renderer = structlog.processors.JSONRenderer()
        structlog.configure(
            processors=[
                structlog.contextvars.merge_contextvars,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
                structlog.processors.format_exc_info,
                renderer,
            ],
            wrapper_class=structlog.make_filtering_bound_logger(lvl),
            logger_factory=structlog.PrintLoggerFactory(file=sys.stdout),
            cache_logger_on_first_use=True,
        )
        _configured = True
    return structlog.get_logger().bind(service=service)


def get_logger(**bind: Any) -> Any:
    """A structlog logger (configure with `setup_logging` first in a service process)."""
    return structlog.get_logger().bind(**bind)


# --------------------------------------------------------------------------- tracing

_tracing_ready = False


def setup_tracing(service: str) -> None:
    """Install an OTLP exporter when the standard OTel environment asks for one; else no-op."""
    global _tracing_ready
    if _tracing_ready:
        return
    _tracing_ready = True
    wants = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    )
    if not wants or os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:  # tracing is optional; never fail a service over it
        return
    provider = TracerProvider(resource=Resource.create({"service.name": f"autellix-{service}"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)


def tracer(name: str = "autellix") -> Any:
    from opentelemetry import trace

    return trace.get_tracer(name)


def inject(carrier: dict[str, str] | None = None) -> dict[str, str]:
    """Current trace context as W3C headers (empty when tracing is off)."""
    from opentelemetry import propagate

    out: dict[str, str] = {} if carrier is None else carrier
    propagate.inject(out)
    return out


def extract(carrier: Mapping[str, str] | None) -> Any:
    """An OTel context from W3C headers (use as `context=` when starting a span)."""
    from opentelemetry import propagate

    return propagate.extract(dict(carrier or {}))


def span(name: str, carrier: Mapping[str, str] | None = None, **attributes: Any) -> Any:
    """A span (context manager) continuing the trace in `carrier` (W3C headers), if any.

    Without an SDK configured this is the OTel API's no-op span, which still carries the
    incoming trace context, so `inject()` inside it passes the caller's trace on unchanged.
    """
    ctx = extract(carrier) if carrier else None
    attrs = {k: v for k, v in attributes.items() if v is not None}
    return tracer().start_as_current_span(name, context=ctx, attributes=attrs)
