"""The OpenTelemetry span of each call: one `autellix.call` client span (the program span is
`Program`'s).

Attributes follow the GenAI semantic conventions (`gen_ai.*`) so trace viewers that know them
show model, token counts and finish reasons. Without an OTel SDK in this process the spans are
no-ops (`autellix.runtime.telemetry`).
"""

from __future__ import annotations

from typing import Any

from autellix.client.results import CallResult
from autellix.runtime import telemetry
from autellix.wire.protocol import CallError, CallRequest

__all__ = ["call_span", "context_of", "end_call_span"]


def call_span(request: CallRequest, parent: Any) -> Any:
    """The client side of one call (no-op without an OTel SDK in this process)."""
    from opentelemetry.trace import SpanKind

    return telemetry.start_span(
        "autellix.call",
        parent,
        kind=SpanKind.CLIENT,
        program_id=request.program_id,
        thread_id=request.thread_id,
        parents=len(request.parent_ids) or None,
        **{
            "gen_ai.operation.name": "chat" if request.messages is not None else "text_completion",
            "gen_ai.provider.name": "autellix",
            "gen_ai.conversation.id": request.program_id,
            "gen_ai.request.model": request.model,
            "gen_ai.request.max_tokens": request.sampling.max_tokens,
        },
    )


def context_of(span: Any) -> Any:
    """A context whose current span is `span`: what children of it and `inject` need."""
    from opentelemetry import trace

    return trace.set_span_in_context(span)


def end_call_span(span: Any, call_id: str | None, outcome: CallResult | CallError | None) -> None:
    """Record how the call ended (its result, or its error) on its span, and end it."""
    if isinstance(outcome, CallResult):
        telemetry.set_attributes(
            span,
            call_id=outcome.call_id,
            engine_id=outcome.engine.engine_id,
            level=outcome.level,
            preemptions=outcome.preemptions,
            **{
                "gen_ai.response.id": outcome.call_id,
                "gen_ai.response.model": outcome.engine.model,
                "gen_ai.response.finish_reasons": [outcome.finish_reason],
                "gen_ai.usage.input_tokens": outcome.usage.prompt_tokens,
                "gen_ai.usage.output_tokens": outcome.usage.completion_tokens,
            },
        )
    else:
        telemetry.set_attributes(span, call_id=call_id)
        if isinstance(outcome, CallError):
            telemetry.record_error(span, outcome.code.value, outcome.message)
    span.end()
