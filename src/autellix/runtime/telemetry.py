"""Logging, tracing and metrics set-up shared by every service process (see docs/observability.md).

Why structlog JSON: service output is read by machines (the supervisor's readiness checks, the
tests' log assertions, log shippers) as often as by people, so every line is one JSON object with
`service`, `event`, `level` and `ts`, plus `trace_id`/`span_id` whenever a trace is active, so a
log line can be found from a trace and back. `AUTELLIX_LOG_FORMAT=console` switches to a readable
format for local debugging; `AUTELLIX_LOG_LEVEL` sets the threshold (default info).

Tracing and metrics are OpenTelemetry, configured only from the standard `OTEL_*` environment
variables (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_TRACES_EXPORTER`, `OTEL_METRICS_EXPORTER`,
`OTEL_EXPORTER_OTLP_PROTOCOL`, `OTEL_EXPORTER_PROMETHEUS_PORT`, `OTEL_SDK_DISABLED`, ...). Unset,
they cost next to nothing: the API's no-op tracer still *propagates* the incoming context, so a
trace passes through an untraced service unbroken.

Trace context travels as W3C `traceparent` in NATS headers (core messages and JetStream publishes),
in `Dispatch.trace` (the scheduler → engine payload) and in HTTP headers. **One program, one
trace**: a call that arrives without any trace context joins its program's trace, whose ids are
derived from the program id (`program_context`), so programs from clients that do not trace at
all (an OpenAI SDK, the Node client, `nats pub`) still show as one trace; the frontend emits the
program's root span (`emit_program_span`) when the program is closed.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import logging
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import structlog
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

_configured = False


def _add_trace_ids(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: the active span's trace and span id (W3C hex), when there is one."""
    from opentelemetry import trace

    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event.setdefault("trace_id", format(ctx.trace_id, "032x"))
        event.setdefault("span_id", format(ctx.span_id, "016x"))
    return event


def _library_warning_in_one_line(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """For libraries' own log records (asyncpg, nats-py, ...) below ERROR: the exception as
    `error`, not a traceback. asyncpg, for one, warns with a full traceback each time it cannot
    restore its pool's connection floor during a Postgres restart: an expected outage that the
    service reports itself, one line each. Errors keep their tracebacks."""
    record = event.get("_record")
    if record is not None and record.levelno < logging.ERROR and event.get("exc_info"):
        exc_info = event.pop("exc_info")
        exc = exc_info[1] if isinstance(exc_info, tuple) else None
        if exc is not None:
            event["error"] = repr(exc)
    return event


def _route_library_logs(level: int, renderer: Any) -> None:
    """Library log records go to stdout as the services' own lines do (one JSON object each,
    with level, time and logger name) instead of Python's plain-text fallback on stderr."""
    shared: list[Any] = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
    ]
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, _library_warning_in_one_line],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(max(level, logging.WARNING))  # libraries' info lines are not ours to print


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
                _add_trace_ids,
                structlog.processors.format_exc_info,
                renderer,
            ],
            wrapper_class=structlog.make_filtering_bound_logger(lvl),
            logger_factory=structlog.PrintLoggerFactory(file=sys.stdout),
            cache_logger_on_first_use=True,
        )
        _route_library_logs(lvl, renderer)
        _configured = True
    return structlog.get_logger().bind(service=service)


def get_logger(**bind: Any) -> Any:
    """A structlog logger (configure with `setup_logging` first in a service process)."""
    return structlog.get_logger().bind(**bind)


# --------------------------------------------------------------------------- SDK set-up

_tracing_ready = False
# (trace_id, span_id) the next span started in this context must use: see `_ProgramIds`
_FORCED_IDS: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar(
    "autellix_forced_ids", default=None
)


def _exporters(kind: str) -> list[str]:
    """Names in OTEL_<KIND>_EXPORTER. Unset: `otlp` when an OTLP endpoint is configured (the
    spec's default exporter), else nothing (no endpoint means nobody is listening)."""
    raw = os.environ.get(f"OTEL_{kind}_EXPORTER")
    if raw is not None:
        return [x.strip().lower() for x in raw.split(",") if x.strip() and x.strip() != "none"]
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        f"OTEL_EXPORTER_OTLP_{kind}_ENDPOINT"
    )
    return ["otlp"] if endpoint else []


def _grpc(kind: str) -> bool:
    proto = os.environ.get(
        f"OTEL_EXPORTER_OTLP_{kind}_PROTOCOL", os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")
    )
    return proto.strip().lower() == "grpc"


def _resource(service: str) -> Any:
    from opentelemetry.sdk.resources import Resource

    attrs: dict[str, Any] = {"service.namespace": "autellix"}
    if not os.environ.get("OTEL_SERVICE_NAME"):  # an explicit OTEL_SERVICE_NAME wins
        attrs["service.name"] = f"autellix-{service}"
    return Resource.create(attrs)


def setup_tracing(service: str) -> None:
    """Install the OTel SDK (traces and metrics) as the standard OTel environment asks; no-op
    when it asks for nothing. Safe to call more than once (the first call wins)."""
    global _tracing_ready
    if _tracing_ready:
        return
    _tracing_ready = True
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return
    for setup in (_setup_traces, _setup_metrics):
        try:
            setup(service)
        except Exception as exc:  # a missing exporter, a busy port: never fail a service
            print(f"warning: telemetry set-up failed ({setup.__name__}): {exc!r}", file=sys.stderr)


def _setup_traces(service: str) -> None:
    names = _exporters("TRACES")
    if not names:
        return
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SimpleSpanProcessor,
    )

    provider = TracerProvider(resource=_resource(service), id_generator=_ProgramIds())
    for name in names:
        if name == "otlp":
            if _grpc("TRACES"):
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                    OTLPSpanExporter as GrpcSpanExporter,
                )

                provider.add_span_processor(BatchSpanProcessor(GrpcSpanExporter()))
            else:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter,
                )

                provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        elif name == "console":
            provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stderr)))
    trace.set_tracer_provider(provider)


def _setup_metrics(service: str) -> None:
    names = _exporters("METRICS")
    if not names:
        return
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    readers: list[Any] = []
    for name in names:
        if name == "otlp":
            if _grpc("METRICS"):
                from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
                    OTLPMetricExporter as GrpcMetricExporter,
                )

                readers.append(PeriodicExportingMetricReader(GrpcMetricExporter()))
            else:
                from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
                    OTLPMetricExporter,
                )

                readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
        elif name == "prometheus":
            readers.append(_prometheus_reader())
        elif name == "console":
            from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

            readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter(out=sys.stderr)))
    if readers:
        provider = MeterProvider(resource=_resource(service), metric_readers=readers)
        metrics.set_meter_provider(provider)


def _prometheus_reader() -> Any:
    """A Prometheus pull reader served on OTEL_EXPORTER_PROMETHEUS_HOST:PORT (default
    localhost:9464; `0` = no separate server, e.g. the frontend serves `/metrics` itself)."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from prometheus_client import start_http_server

    port = int(os.environ.get("OTEL_EXPORTER_PROMETHEUS_PORT", "9464"))
    host = os.environ.get("OTEL_EXPORTER_PROMETHEUS_HOST", "localhost")
    reader = PrometheusMetricReader()
    if port:
        try:
            start_http_server(port=port, addr=host)
        except OSError as exc:  # e.g. several services on one host: the first one has it
            print(f"warning: no Prometheus endpoint on {host}:{port}: {exc}", file=sys.stderr)
    return reader


def prometheus_text() -> tuple[bytes, str] | None:
    """The Prometheus exposition of this process's metrics, or None when the Prometheus
    exporter is not configured (`OTEL_METRICS_EXPORTER=prometheus`)."""
    if "prometheus" not in _exporters("METRICS"):
        return None
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def shutdown() -> None:
    """Flush and stop the SDK (the SDK also does this at interpreter exit)."""
    from opentelemetry import metrics, trace

    for provider in (trace.get_tracer_provider(), metrics.get_meter_provider()):
        fn = getattr(provider, "shutdown", None)
        if fn is not None:
            with contextlib.suppress(Exception):
                fn()


# --------------------------------------------------------------------------- program traces


def program_ids(program_id: str) -> tuple[int, int]:
    """(trace_id, span_id) of a program's trace and root span, derived from its id: every
    service (and every replica) computes the same ones without coordination."""
    digest = hashlib.sha256(f"autellix-program:{program_id}".encode()).digest()
    trace_id = int.from_bytes(digest[:16], "big") or 1
    span_id = int.from_bytes(digest[16:24], "big") or 1
    return trace_id, span_id


def program_context(program_id: str) -> Any:
    """An OTel context whose parent is the program's (derived) root span: spans started in it
    belong to the program's trace even though nothing upstream traced."""
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    trace_id, span_id = program_ids(program_id)
    ctx = SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(0x01))
    return trace.set_span_in_context(NonRecordingSpan(ctx))


class _ProgramIds(RandomIdGenerator):
    """Random ids, except while `_FORCED_IDS` is set: then the program's derived ids, so the
    program's root span gets exactly the span id its calls already name as their parent."""

    def generate_span_id(self) -> int:
        forced = _FORCED_IDS.get()
        return forced[1] if forced else super().generate_span_id()

    def generate_trace_id(self) -> int:
        forced = _FORCED_IDS.get()
        return forced[0] if forced else super().generate_trace_id()


def emit_program_span(
    program_id: str,
    start_ns: int,
    end_ns: int,
    carrier: Mapping[str, str] | None = None,
    **attributes: Any,
) -> bool:
    """Record the root span of a program whose calls used the derived program trace.

    Skipped (False) when `carrier` carries trace context: then the client traces the program
    itself (the Python client's `autellix.program` span) and owns its root.
    """
    if has_trace(carrier):
        return False
    from opentelemetry import context as otel_context
    from opentelemetry.trace import SpanKind

    token = _FORCED_IDS.set(program_ids(program_id))
    try:
        sp = tracer().start_span(
            "autellix.program",
            context=otel_context.Context(),  # no parent: this is the root
            kind=SpanKind.SERVER,
            start_time=start_ns,
            attributes=_attrs({"program_id": program_id, **attributes})
            | {"gen_ai.conversation.id": program_id},
        )
    finally:
        _FORCED_IDS.reset(token)
    sp.end(end_time=end_ns)
    return True


# --------------------------------------------------------------------------- spans


def tracer(name: str = "autellix") -> Any:
    from opentelemetry import trace

    return trace.get_tracer(name)


def has_trace(carrier: Mapping[str, str] | None) -> bool:
    return bool(carrier) and any(k.lower() == "traceparent" for k in carrier or {})


def inject(carrier: dict[str, str] | None = None, context: Any = None) -> dict[str, str]:
    """Trace context (current, or `context`) as W3C headers (empty when there is none)."""
    from opentelemetry import propagate

    out: dict[str, str] = {} if carrier is None else carrier
    propagate.inject(out, context=context)
    return out


def extract(carrier: Mapping[str, str] | None) -> Any:
    """An OTel context from W3C headers (use as `context=` when starting a span)."""
    from opentelemetry import propagate

    return propagate.extract(dict(carrier or {}))


def parent_context(carrier: Mapping[str, str] | None, program_id: str | None = None) -> Any:
    """The context a span continues: the carrier's trace; else None when a span is current
    (the span becomes its child); else the program's derived trace; else None (a new trace)."""
    if has_trace(carrier):
        return extract(carrier)
    from opentelemetry import trace

    if trace.get_current_span().get_span_context().is_valid:
        return None
    if program_id:
        return program_context(program_id)
    return None


def remote_parent(carrier: Mapping[str, str] | None, program_id: str | None) -> Any:
    """The context for a span of ONE call handled inside shared work (a scheduler batch): the
    call's own incoming trace, else its program's derived trace; never the current span."""
    if has_trace(carrier):
        return extract(carrier)
    if program_id:
        return program_context(program_id)
    from opentelemetry import context as otel_context

    return otel_context.Context()


_CARRIERS: contextvars.ContextVar[Mapping[str, Mapping[str, str] | None] | None] = (
    contextvars.ContextVar("autellix_carriers", default=None)
)


@contextlib.contextmanager
def carriers(by_key: Mapping[str, Mapping[str, str] | None]) -> Iterator[None]:
    """Make each item's incoming trace headers (e.g. per call id of a batch) findable with
    `carrier_for` by code deeper down, without threading them through every signature."""
    token = _CARRIERS.set(by_key)
    try:
        yield
    finally:
        _CARRIERS.reset(token)


def carrier_for(key: str) -> Mapping[str, str] | None:
    by_key = _CARRIERS.get()
    return by_key.get(key) if by_key else None


def current_links() -> list[Any]:
    """A span link to the current span (if any): ties a per-call span to the batch it ran in."""
    from opentelemetry import trace

    ctx = trace.get_current_span().get_span_context()
    return [trace.Link(ctx)] if ctx.is_valid else []


def _attrs(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """Attribute names: dotted ones as given (OTel conventions, e.g. `gen_ai.request.model`),
    bare ones prefixed `autellix.`; None values dropped."""
    out: dict[str, Any] = {}
    for key, value in attributes.items():
        if value is None:
            continue
        if isinstance(value, tuple):
            value = list(value)
        out[key if "." in key else f"autellix.{key}"] = value
    return out


def attrs(**attributes: Any) -> dict[str, Any]:
    """Attributes named as `span` names them (for metric recordings)."""
    return _attrs(attributes)


def span(
    name: str,
    carrier: Mapping[str, str] | None = None,
    *,
    kind: Any = None,
    context: Any = None,
    links: Any = None,
    **attributes: Any,
) -> Any:
    """A span (context manager) continuing the trace in `carrier` (W3C headers).

    Without trace context in `carrier` the span is a child of the current span; with no
    current span either, a `program_id` attribute puts it in that program's derived trace (see
    the module docstring). `context` overrides both. Without an SDK
    this is the API's no-op span, which still carries the incoming context, so `inject()` inside
    it passes the caller's trace on unchanged.
    """
    from opentelemetry.trace import SpanKind

    ctx = context if context is not None else parent_context(carrier, attributes.get("program_id"))
    return tracer().start_as_current_span(
        name,
        context=ctx,
        kind=kind or SpanKind.INTERNAL,
        attributes=_attrs(attributes),
        links=links,
    )


def start_span(
    name: str,
    context: Any = None,
    *,
    kind: Any = None,
    start_time: int | None = None,
    **attributes: Any,
) -> Any:
    """A span that is not made current (for work that outlives a `with` block: streams)."""
    from opentelemetry.trace import SpanKind

    return tracer().start_span(
        name,
        context=context,
        kind=kind or SpanKind.INTERNAL,
        start_time=start_time,
        attributes=_attrs(attributes),
    )


@contextlib.contextmanager
def use_span(sp: Any) -> Iterator[Any]:
    """Make `sp` current for a block without ending it."""
    from opentelemetry import trace

    with trace.use_span(sp, end_on_exit=False):
        yield sp


def set_attributes(sp: Any = None, **attributes: Any) -> None:
    """Set attributes on `sp` (default: the current span); names as in `span`."""
    from opentelemetry import trace

    target = sp if sp is not None else trace.get_current_span()
    if target.is_recording():
        target.set_attributes(_attrs(attributes))


def add_event(name: str, sp: Any = None, **attributes: Any) -> None:
    """An event on `sp` (default: the current span), e.g. `preempted`, `resumed`."""
    from opentelemetry import trace

    target = sp if sp is not None else trace.get_current_span()
    if target.is_recording():
        target.add_event(name, _attrs(attributes))


def record_error(sp: Any, code: str, message: str) -> None:
    """Mark `sp` failed with a protocol error code (`error.type`, as OTel conventions say)."""
    from opentelemetry.trace import Status, StatusCode

    if sp.is_recording():
        sp.set_attribute("error.type", code)
        sp.set_status(Status(StatusCode.ERROR, message[:500]))


# --------------------------------------------------------------------------- metrics


def meter(name: str = "autellix") -> Any:
    """The OTel meter (no-op until `setup_tracing` installed a MeterProvider)."""
    from opentelemetry import metrics

    return metrics.get_meter(name)


def counter(m: Any, name: str, description: str, unit: str = "{call}") -> Any:
    """A monotonic counter on meter `m` (units in UCUM braces: most of ours count calls)."""
    return m.create_counter(name, unit=unit, description=description)


def histogram(m: Any, name: str, description: str, buckets: Sequence[float]) -> Any:
    """A histogram of seconds with explicit bucket bounds: the SDK's default bounds are for
    milliseconds, so without them every call would land in the first bucket."""
    return m.create_histogram(
        name, unit="s", description=description, explicit_bucket_boundaries_advisory=buckets
    )


def gauge(m: Any, name: str, callback: Any, description: str, unit: str = "{call}") -> None:
    """An observable gauge on meter `m` read by `callback` at each collection."""
    m.create_observable_gauge(name, callbacks=[callback], unit=unit, description=description)


def failed_calls_counter(m: Any) -> Any:
    """`autellix.calls.failed`: every service that answers a call with an error counts it here,
    by `error.type`, so one series name sums across frontend, schedulers and engines."""
    return counter(m, "autellix.calls.failed", "calls answered with an error, by error code")


def observation(value: float, **attributes: Any) -> Any:
    """One value for an observable instrument's callback (attributes named as in `span`)."""
    from opentelemetry.metrics import Observation

    return Observation(value, _attrs(attributes))
