"""Telemetry helpers without services: derived program traces, context choice, log ids, env."""

from __future__ import annotations

import pytest

from autellix.runtime import telemetry


def test_program_ids_are_deterministic_and_distinct() -> None:
    a, b = telemetry.program_ids("agent-1"), telemetry.program_ids("agent-2")
    assert a == telemetry.program_ids("agent-1") and a != b
    assert all(0 < x for x in (*a, *b)) and a[0] < 2**128 and a[1] < 2**64


def test_a_span_without_incoming_context_joins_its_program_trace() -> None:
    trace_id, root = telemetry.program_ids("p-x")
    with telemetry.span("autellix.accept", {"other": "header"}, program_id="p-x"):
        event = telemetry._add_trace_ids(None, "info", {})
        headers = telemetry.inject()
    assert event["trace_id"] == format(trace_id, "032x")
    # without an SDK the span is the program's (non-recording) root itself; with one, a child
    assert headers["traceparent"].split("-")[1] == format(trace_id, "032x")
    assert event["span_id"] == format(root, "016x")


def test_incoming_trace_context_wins_over_the_program() -> None:
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    with telemetry.span("autellix.accept", {"traceparent": parent}, program_id="p-x"):
        event = telemetry._add_trace_ids(None, "info", {})
    assert event["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"


def test_a_batch_item_uses_its_own_context_not_the_current_span() -> None:
    with telemetry.span("batch", program_id="p-batch"):
        ctx = telemetry.remote_parent(None, "p-item")
        with telemetry.span("item", context=ctx):
            event = telemetry._add_trace_ids(None, "info", {})
    assert event["trace_id"] == format(telemetry.program_ids("p-item")[0], "032x")


def test_no_trace_no_log_ids() -> None:
    assert "trace_id" not in telemetry._add_trace_ids(None, "info", {})


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, []),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://x:4318/v1/metrics"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_METRICS_EXPORTER": "none"}, []),
        ({"OTEL_METRICS_EXPORTER": "prometheus, otlp"}, ["prometheus", "otlp"]),
    ],
)
def test_metrics_exporters_from_the_standard_environment(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: list[str]
) -> None:
    for key in (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        "OTEL_METRICS_EXPORTER",
    ):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert telemetry._exporters("METRICS") == expected


def test_attribute_names() -> None:
    assert telemetry.attrs(level=2, engine_id="e", **{"gen_ai.request.model": "m"}, x=None) == {
        "autellix.level": 2,
        "autellix.engine_id": "e",
        "gen_ai.request.model": "m",
    }
