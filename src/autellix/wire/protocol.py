"""Autellix wire protocol v1: every message on the bus, and every subject name, in one place.

Why one module: the frontend, scheduler, engine, Python client, JSON Schema export and AsyncAPI
document all derive from these classes, so they cannot drift. Messages are JSON (UTF-8) so any
language can speak the protocol; the exported JSON Schemas live in `docs/schemas/`.

Call flow (see docs/protocol.md):
1. The caller subscribes to an inbox, then publishes a `CallRequest` to `Subjects.submit` with
   the NATS reply subject set to that inbox.
2. Everything about the call arrives on that inbox, in order: `CallAccepted` (or `CallError`),
   zero or more `TokenDelta`, then exactly one `CallFinal` or `CallError`.
   Deltas carry `offset` (index of their first token in the completion) so a caller can drop a
   replayed delta after an engine restart: the stream is exactly-once *by offset*.

The definitions live by kind in `base`, `subjects`, `requests`, `replies`, `internal` and
`codec`; this module re-exports all of them so every importer has one name to use.
"""

from __future__ import annotations

from autellix.wire.base import (
    BYTES_PER_TOKEN_ID,
    DISPATCH_OVERHEAD_BYTES,
    MAX_JSON_DEPTH,
    MAX_MESSAGE_BYTES,
    MAX_PROMPT_CHARS,
    MAX_PROMPT_TOKENS,
    MAX_TOKEN_ID,
    PROTOCOL_VERSION,
    Id,
    M,
)
from autellix.wire.codec import (
    delivery_size,
    encode,
    json_schemas,
    json_too_deep,
    parse_call_request,
    parse_request,
    too_large_for_bus,
    validate_model,
)
from autellix.wire.internal import (
    MAX_BEATS_PER_MESSAGE,
    NEVER_PREEMPT,
    CallProgress,
    Control,
    DirectReply,
    Dispatch,
    EngineHeartbeat,
    EngineHeartbeats,
    EngineWork,
    ScheduleCall,
    ServiceReport,
    heartbeats_in,
)
from autellix.wire.replies import (
    CALL_REPLY,
    TOKEN_LOGPROBS,
    CallAccepted,
    CallCancelReply,
    CallError,
    CallFinal,
    CallReply,
    CallResumeReply,
    EngineInfo,
    ErrorCode,
    ProgramCancelReply,
    ProgramReply,
    ProgramStats,
    Timing,
    TokenDelta,
    TokenLogprob,
    TopLogprob,
    Usage,
)
from autellix.wire.requests import (
    CallCancel,
    CallRequest,
    CallResume,
    ChatMessage,
    FunctionCall,
    PgInt,
    ProgramCancel,
    ProgramClose,
    ProgramOpen,
    SamplingParams,
    StructuredOutput,
    Text,
    TokenId,
    ToolCall,
)
from autellix.wire.subjects import (
    Subjects,
)

__all__ = [
    "BYTES_PER_TOKEN_ID",
    "CALL_REPLY",
    "DISPATCH_OVERHEAD_BYTES",
    "MAX_BEATS_PER_MESSAGE",
    "MAX_JSON_DEPTH",
    "MAX_MESSAGE_BYTES",
    "MAX_PROMPT_CHARS",
    "MAX_PROMPT_TOKENS",
    "MAX_TOKEN_ID",
    "NEVER_PREEMPT",
    "PROTOCOL_VERSION",
    "TOKEN_LOGPROBS",
    "CallAccepted",
    "CallCancel",
    "CallCancelReply",
    "CallError",
    "CallFinal",
    "CallProgress",
    "CallReply",
    "CallRequest",
    "CallResume",
    "CallResumeReply",
    "ChatMessage",
    "Control",
    "DirectReply",
    "Dispatch",
    "EngineHeartbeat",
    "EngineHeartbeats",
    "EngineInfo",
    "EngineWork",
    "ErrorCode",
    "FunctionCall",
    "Id",
    "M",
    "PgInt",
    "ProgramCancel",
    "ProgramCancelReply",
    "ProgramClose",
    "ProgramOpen",
    "ProgramReply",
    "ProgramStats",
    "SamplingParams",
    "ScheduleCall",
    "ServiceReport",
    "StructuredOutput",
    "Subjects",
    "Text",
    "Timing",
    "TokenDelta",
    "TokenId",
    "TokenLogprob",
    "ToolCall",
    "TopLogprob",
    "Usage",
    "delivery_size",
    "encode",
    "heartbeats_in",
    "json_schemas",
    "json_too_deep",
    "parse_call_request",
    "parse_request",
    "too_large_for_bus",
    "validate_model",
]
