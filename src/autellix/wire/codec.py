"""Bytes in and out: the JSON depth and size checks before parsing, typed `CallError`s for bad
input, the bus-size rule (`delivery_size`, `too_large_for_bus`), `encode`, `json_schemas`.
"""

from __future__ import annotations

from itertools import accumulate
from typing import Any

from pydantic import BaseModel

from autellix.wire.base import (
    BYTES_PER_LOGPROB,
    BYTES_PER_TOKEN_ID,
    DISPATCH_OVERHEAD_BYTES,
    MAX_JSON_DEPTH,
    MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION,
    M,
)
from autellix.wire.internal import (
    Control,
    DirectReply,
    Dispatch,
    EngineHeartbeat,
    EngineHeartbeats,
    ScheduleCall,
    ServiceReport,
)
from autellix.wire.replies import (
    CALL_REPLY,
    CallAccepted,
    CallCancelReply,
    CallError,
    CallFinal,
    CallResumeReply,
    ErrorCode,
    ProgramCancelReply,
    ProgramReply,
    TokenDelta,
)
from autellix.wire.requests import (
    CallCancel,
    CallRequest,
    CallResume,
    ProgramCancel,
    ProgramClose,
    ProgramOpen,
)

_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}
_DEPTH_CHUNK = 65_536


def _outside_strings(data: bytes) -> bytes:
    """`data` without the contents of its JSON strings (brackets inside them do not nest)."""
    plain = data.replace(b"\\\\", b"").replace(b'\\"', b"")  # escaped \ first, then \"
    return b"".join(plain.split(b'"')[::2])


def json_too_deep(data: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether the JSON text `data` nests arrays/objects deeper than `limit`, found without
    parsing it.

    Why not parse and catch: the parser builds the deep object first (and a 100,000-deep array
    hits the recursion limit inside it). Here the work is C-speed passes over the bytes: a
    count settles the common case; otherwise strings are cut out, only brackets kept, and the
    running depth summed (in chunks, stopping at the first that goes too deep)."""
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    brackets = _outside_strings(data).translate(None, _NOT_BRACKETS)
    depth = 0
    for at in range(0, len(brackets), _DEPTH_CHUNK):
        chunk = brackets[at : at + _DEPTH_CHUNK]
        running = list(accumulate(map(_STEP.__getitem__, chunk), initial=depth))
        if max(running) > limit:
            return True
        depth = running[-1]
    return False


def parse_request(model: type[M], data: bytes, limit: int = MAX_MESSAGE_BYTES) -> M | CallError:
    """Decode and validate a request (`CallRequest`, `ProgramOpen`, ...) from raw bytes.

    Never raises: bad input becomes a typed error, checked in this order so no check costs
    more than the one before it: size (`limit`: the bus's max_payload) → `message_too_large`;
    nesting deeper than `MAX_JSON_DEPTH` → `validation_error`; not JSON → `invalid_json`; not
    an object → `validation_error`; another protocol version → `unsupported_version`; then the
    model's own rules (NUL characters, token ids, ...) → `validation_error`."""
    import json

    if len(data) > limit:
        return CallError(
            code=ErrorCode.message_too_large,
            message=f"message is {len(data)} bytes; the limit is {limit}",
        )
    if json_too_deep(data):
        return CallError(
            code=ErrorCode.validation_error,
            message=f"JSON nests deeper than {MAX_JSON_DEPTH} levels",
        )
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        return CallError(code=ErrorCode.invalid_json, message=f"request is not valid JSON: {exc}")
    if not isinstance(obj, dict):
        return CallError(code=ErrorCode.validation_error, message="request must be a JSON object")
    version = obj.get("v", PROTOCOL_VERSION)
    if version != PROTOCOL_VERSION:
        return CallError(
            code=ErrorCode.unsupported_version,
            message=f"protocol version {version!r} is not supported; this server speaks v1",
        )
    return validate_model(model, obj)


def parse_call_request(data: bytes, limit: int = MAX_MESSAGE_BYTES) -> CallRequest | CallError:
    """`parse_request` for a `CallRequest` (the submit subject)."""
    return parse_request(CallRequest, data, limit)


def delivery_size(request: CallRequest, request_json: str | None = None) -> int:
    """The most bytes any message carrying this call can take on the bus: its Dispatch (the
    request plus envelope plus, after a move, every token already streamed and, with
    logprobs, theirs) or its CallFinal (every token id; with logprobs, 1 + top_logprobs entries
    per token). A call whose size
    exceeds the bus's max_payload could be accepted but never delivered, so the frontend
    refuses it up front (`message_too_large`)."""
    text = request_json or request.model_dump_json(exclude_none=True)
    # the scheduler sends the request as Postgres renders it from jsonb: ", " and ": "
    body = len(text.encode()) + text.count(",") + text.count(":")
    sp = request.sampling
    per_token = BYTES_PER_TOKEN_ID
    if sp.logprobs is not None:
        per_token += BYTES_PER_LOGPROB * (1 + sp.logprobs)
    return body + DISPATCH_OVERHEAD_BYTES + per_token * sp.max_tokens


def too_large_for_bus(
    request: CallRequest, request_json: str, max_payload: int
) -> CallError | None:
    """`message_too_large` when `delivery_size` exceeds `max_payload`, else None."""
    size = delivery_size(request, request_json)
    if size <= max_payload:
        return None
    with_lp = " and their logprobs" if request.sampling.logprobs is not None else ""
    return CallError(
        code=ErrorCode.message_too_large,
        message=f"this call's messages could take {size} bytes (request, dispatch envelope and "
        f"{request.sampling.max_tokens} max_tokens of token ids{with_lp}); the bus carries at most "
        f"{max_payload} bytes a message: shorten the prompt or lower max_tokens",
    )


def validate_model(model: type[M], obj: Any) -> M | CallError:
    """Validate `obj` against `model`, turning a pydantic error into a `CallError`."""
    from pydantic import ValidationError

    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        details = [
            {"loc": ".".join(str(p) for p in err["loc"]), "msg": err["msg"], "type": err["type"]}
            for err in exc.errors(include_url=False, include_context=False, include_input=False)
        ]
        summary = "; ".join(f"{d['loc'] or '<root>'}: {d['msg']}" for d in details[:5])
        return CallError(
            code=ErrorCode.validation_error, message=f"invalid request: {summary}", details=details
        )


def encode(msg: BaseModel) -> bytes:
    return msg.model_dump_json(exclude_none=True).encode()


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema for every public message, keyed by file stem (exported to docs/schemas/)."""
    public: dict[str, type[BaseModel]] = {
        "call_request": CallRequest,
        "call_accepted": CallAccepted,
        "token_delta": TokenDelta,
        "call_final": CallFinal,
        "call_error": CallError,
        "program_open": ProgramOpen,
        "program_close": ProgramClose,
        "program_reply": ProgramReply,
        "program_cancel": ProgramCancel,
        "program_cancel_reply": ProgramCancelReply,
        "call_cancel": CallCancel,
        "call_cancel_reply": CallCancelReply,
        "call_resume": CallResume,
        "call_resume_reply": CallResumeReply,
        "schedule_call": ScheduleCall,
        "dispatch": Dispatch,
        "direct_reply": DirectReply,
        "control": Control,
        "engine_heartbeat": EngineHeartbeat,
        "engine_heartbeats": EngineHeartbeats,
        "service_report": ServiceReport,
    }
    out = {name: model.model_json_schema() for name, model in public.items()}
    out["call_reply"] = CALL_REPLY.json_schema()
    return out
