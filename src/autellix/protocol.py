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
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

PROTOCOL_VERSION = 1
M = TypeVar("M", bound="BaseModel")
MAX_PROMPT_CHARS = 1_000_000  # hard cap on text prompts; engines enforce model length themselves
MAX_PROMPT_TOKENS = 262_144
MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # reject anything larger before parsing
_ID_RE = r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$"
_NAMESPACE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$")

Id = Annotated[str, Field(pattern=_ID_RE, description="1-128 chars: letters, digits, _ . : -")]


class _Msg(BaseModel):
    """What callers send (requests): unknown fields are an error, so a caller's typo
    (`max_token`) is reported instead of silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class _Extensible(BaseModel):
    """What services send (replies to callers, and messages between services): unknown fields
    are ignored. Why: within protocol v1 a newer service may add optional fields, and the peers
    not yet upgraded (a client library, a scheduler replica during a rolling upgrade) must keep
    reading its messages. Fields are only ever added, optional; removing or retyping one is a
    new protocol version (docs/protocol.md, "Compatibility")."""

    model_config = ConfigDict(extra="ignore", frozen=True)


# --------------------------------------------------------------------------- subjects


class Subjects:
    """Every NATS subject and JetStream stream name, derived from one namespace.

    The namespace lets several deployments (or test runs) share one NATS server.
    """

    def __init__(self, namespace: str = "autellix") -> None:
        if not _NAMESPACE_RE.match(namespace):
            raise ValueError(f"invalid namespace {namespace!r}: letters, digits, _ and -")
        self.namespace = namespace
        root = f"{namespace}.v{PROTOCOL_VERSION}"
        self.root = root
        #: core request/reply: `CallRequest` in, stream of replies to the NATS reply subject
        self.submit = f"{root}.call.submit"
        #: core request/reply: `ProgramOpen` / `ProgramClose` → `ProgramReply`
        self.program_open = f"{root}.program.open"
        self.program_close = f"{root}.program.close"
        #: core request/reply: `CallCancel` → `CallCancelReply` (or `CallError` for bad input)
        self.cancel = f"{root}.call.cancel"
        #: JetStream (stream `calls_stream`): accepted calls waiting for a scheduler decision
        self.sched_calls = f"{root}.sched.call"
        #: core request/reply, queue group of the schedulers: the direct hop (`direct.py`),
        #: `ScheduleCall` → `DirectReply`; not taken → the frontend uses `sched_calls`
        self.sched_direct = f"{root}.sched.direct"
        #: JetStream (stream `dispatch_stream`): `Dispatch` for one engine and MLFQ level
        self.dispatch_prefix = f"{root}.engine"
        #: core: `EngineHeartbeat` from every engine
        self.heartbeat = f"{root}.engine.heartbeat"
        #: JetStream (stream `reports_stream`): `ServiceReport` from engines to schedulers
        self.reports = f"{root}.report"
        # stream names may not contain dots
        self.calls_stream = f"{namespace}_calls"
        self.dispatch_stream = f"{namespace}_dispatch"
        self.reports_stream = f"{namespace}_reports"
        #: durable consumer shared by all scheduler replicas (work-queue semantics)
        self.scheduler_durable = "scheduler"

    def dispatch(self, engine_id: str, level: int) -> str:
        """Subject an engine consumes for calls of MLFQ `level` (0 = highest priority).

        The level is its own token (`q.<level>`): NATS wildcards match whole tokens only, so
        `q*` would be a literal, and `<engine_id>.*` would also match the control subject.
        """
        return f"{self.dispatch_prefix}.{engine_id}.q.{level}"

    def dispatch_all(self, engine_id: str) -> str:
        return f"{self.dispatch_prefix}.{engine_id}.q.*"

    def dispatch_wildcard(self) -> str:
        return f"{self.dispatch_prefix}.*.q.*"

    def dispatch_direct(self, engine_id: str) -> str:
        """Core request/reply subject of one engine's direct hop: `Dispatch` → `DirectReply`
        (not taken → the scheduler publishes to `dispatch(engine_id, level)`). Outside the
        dispatch stream's `engine.*.q.*`, so JetStream never stores or acknowledges it."""
        return f"{self.dispatch_prefix}.{engine_id}.direct"

    def control(self, engine_id: str) -> str:
        """Core subject for `Control` messages (preempt, set_level, cancel) to one engine."""
        return f"{self.dispatch_prefix}.{engine_id}.control"

    def all_subjects(self) -> dict[str, str]:
        """Documented subject table (used by docs generation and tests)."""
        return {
            "submit": self.submit,
            "program_open": self.program_open,
            "program_close": self.program_close,
            "cancel": self.cancel,
            "sched_calls": self.sched_calls,
            "sched_direct": self.sched_direct,
            "dispatch": self.dispatch("<engine_id>", 0).replace(".q.0", ".q.<level>"),
            "dispatch_direct": self.dispatch_direct("<engine_id>"),
            "control": self.control("<engine_id>"),
            "heartbeat": self.heartbeat,
            "reports": self.reports,
        }


# --------------------------------------------------------------------------- requests


class ChatMessage(_Msg):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str = Field(max_length=MAX_PROMPT_CHARS)
    name: str | None = None


class SamplingParams(_Msg):
    """What vLLM's SamplingParams needs; validated here so engines never see nonsense."""

    max_tokens: int = Field(default=256, ge=1, le=MAX_PROMPT_TOKENS)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = None
    stop: list[str] = Field(default_factory=list, max_length=16)
    stop_token_ids: list[int] = Field(default_factory=list, max_length=64)
    ignore_eos: bool = False


class CallRequest(_Msg):
    """One tagged LLM call. Exactly one of `prompt`, `messages`, `prompt_token_ids` is set."""

    v: Literal[1] = Field(default=1, description="protocol version")
    program_id: Id
    thread_id: Id = "main"
    parent_ids: list[Id] = Field(default_factory=list, max_length=1024)
    client_call_id: Id | None = Field(
        default=None, description="idempotency key: resubmitting it returns the same call"
    )
    model: str | None = None
    prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    messages: list[ChatMessage] | None = Field(default=None, max_length=4096)
    prompt_token_ids: list[Annotated[int, Field(ge=0)]] | None = Field(
        default=None, max_length=MAX_PROMPT_TOKENS
    )
    sampling: SamplingParams = Field(default_factory=SamplingParams)
    metadata: dict[str, str] = Field(default_factory=dict, max_length=32)
    stream: bool = Field(
        default=True,
        description="send TokenDeltas as tokens come; false: only the CallFinal, which then "
        "always carries every token id (saves a message per delta on the engine, NATS and you)",
    )

    @model_validator(mode="after")
    def _one_prompt(self) -> CallRequest:
        given = [
            n for n in ("prompt", "messages", "prompt_token_ids") if getattr(self, n) is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "exactly one of prompt, messages, prompt_token_ids must be set"
                f" (got {given or 'none'})"
            )
        if self.messages is not None and not self.messages:
            raise ValueError("messages must not be empty")
        if self.prompt_token_ids is not None and not self.prompt_token_ids:
            raise ValueError("prompt_token_ids must not be empty")
        return self


class ProgramOpen(_Msg):
    v: Literal[1] = 1
    program_id: Id | None = Field(default=None, description="omit to have one assigned")
    metadata: dict[str, str] = Field(default_factory=dict, max_length=32)


class ProgramClose(_Msg):
    v: Literal[1] = 1
    program_id: Id


class CallCancel(_Msg):
    """Cancel a call: by `call_id`, or by `program_id` + `client_call_id` (the caller's
    idempotency key, usable before `CallAccepted` arrived). Idempotent: cancelling a call that
    already ended (or was cancelled) changes nothing and says so in the reply."""

    v: Literal[1] = Field(default=1, description="protocol version")
    call_id: Id | None = None
    program_id: Id | None = None
    client_call_id: Id | None = None
    reason: str = Field(default="", max_length=500, description="recorded with the call")

    @model_validator(mode="after")
    def _one_key(self) -> CallCancel:
        by_id = self.call_id is not None and self.client_call_id is None
        by_key = (
            self.call_id is None and self.program_id is not None and self.client_call_id is not None
        )
        if not (by_id or by_key):
            raise ValueError("set call_id, or (instead) program_id and client_call_id")
        return self


class ProgramStats(_Extensible):
    calls: int
    calls_finished: int
    prompt_tokens: int
    completion_tokens: int
    service: float
    waiting_s: float


class ProgramReply(_Extensible):
    type: Literal["program"] = "program"
    program_id: str
    status: Literal["open", "closed", "expired"]
    stats: ProgramStats | None = None


# --------------------------------------------------------------------------- replies


class ErrorCode(StrEnum):
    invalid_json = "invalid_json"
    validation_error = "validation_error"
    unsupported_version = "unsupported_version"
    message_too_large = "message_too_large"
    prompt_too_long = "prompt_too_long"
    program_closed = "program_closed"
    no_tokenizer = "no_tokenizer"
    no_engine = "no_engine"
    engine_failed = "engine_failed"
    cancelled = "cancelled"
    timeout = "timeout"
    internal = "internal"


class CallAccepted(_Extensible):
    type: Literal["accepted"] = "accepted"
    call_id: str
    program_id: str
    duplicate: bool = Field(default=False, description="true when client_call_id was seen before")


class TokenDelta(_Extensible):
    type: Literal["delta"] = "delta"
    call_id: str
    offset: int = Field(ge=0, description="index of token_ids[0] within the completion")
    token_ids: list[int]
    text: str | None = None


class Usage(_Extensible):
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0


class Timing(_Extensible):
    """Wall-clock timestamps (UTC) of the call's life, and derived durations in seconds."""

    accepted_at: datetime
    dispatched_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime
    queue_s: float = Field(description="accepted → first started")
    run_s: float = Field(description="time spent admitted in an engine batch")


class EngineInfo(_Extensible):
    engine_id: str
    backend: str = Field(description='"sim" (simulated) or "vllm" (real)')
    model: str


class CallFinal(_Extensible):
    type: Literal["final"] = "final"
    call_id: str
    program_id: str
    finish_reason: Literal["length", "stop", "abort"]
    token_ids: list[int] | None = Field(default=None, description="whole completion (optional)")
    text: str | None = None
    usage: Usage
    timing: Timing
    engine: EngineInfo
    preemptions: int = 0
    level: int = 0


class CallError(_Extensible):
    type: Literal["error"] = "error"
    call_id: str | None = None
    code: ErrorCode
    message: str
    retryable: bool = False
    details: list[dict[str, Any]] | None = None


class CallCancelReply(_Extensible):
    """Answer to `CallCancel`. `outcome`: `cancelled` (this request ended the call: its caller
    got `CallError(cancelled)` and its engine, if any, a `Control(cancel)`), `already_cancelled`,
    `already_finished` (it ended otherwise first; `status` says how), or `unknown` (no such
    call)."""

    type: Literal["cancel"] = "cancel"
    call_id: str | None = None
    outcome: Literal["cancelled", "already_cancelled", "already_finished", "unknown"]
    status: str | None = Field(
        default=None, description="the call's status now: failed | finished (None: unknown)"
    )
    was: str | None = Field(
        default=None, description="for `cancelled`: the status it had (queued, running, ...)"
    )


CallReply = Annotated[
    CallAccepted | TokenDelta | CallFinal | CallError | ProgramReply, Field(discriminator="type")
]
CALL_REPLY = TypeAdapter(CallReply)


# --------------------------------------------------------------------------- internal


class ScheduleCall(_Extensible):
    """Frontend → scheduler (JetStream): a call accepted and stored; Postgres has the payload."""

    type: Literal["schedule"] = "schedule"
    call_id: str
    program_id: str
    reply_to: str
    attempt: int = 0
    reason: str = "new"  # new | redispatch (engine lost) | resume


# Dispatch.min_run_tokens of a non-preemptive policy whose calls still get different levels
# (`plas-np`): the engine never preempts such a run for a better-ranked call.
NEVER_PREEMPT = 2**31 - 1


class Dispatch(_Extensible):
    """Scheduler → engine (JetStream, subject per engine and level)."""

    type: Literal["dispatch"] = "dispatch"
    call_id: str
    program_id: str
    thread_id: str
    reply_to: str
    level: int
    priority: float = Field(description="program service at dispatch (lower runs first)")
    attempt: int = 0
    request: CallRequest
    resume_token_ids: list[int] = Field(
        default_factory=list, description="tokens already streamed (continuation after a restart)"
    )
    accepted_at: datetime
    trace: dict[str, str] = Field(default_factory=dict)
    tiebreak: float = Field(
        default=0.0,
        description="order inside a level, lower first (program arrival or call issue, epoch s)",
    )
    min_run_tokens: int = Field(
        default=0,
        ge=0,
        description="a run younger than this many tokens is not preempted; NEVER_PREEMPT "
        "(2147483647): never preempted for priority (a non-preemptive policy)",
    )
    prefill_weight: float = Field(
        default=0.0, ge=0.0, description="service units per computed (uncached) prompt token"
    )
    resume_service: float = Field(
        default=0.0, ge=0.0, description="service already attained (continuation after a loss)"
    )
    resume_run_s: float = Field(
        default=0.0, ge=0.0, description="seconds already run (continuation after a loss)"
    )
    control_seq: int = Field(
        default=0, ge=0, description="the call's Control seq this Dispatch already reflects"
    )


class DirectReply(_Extensible):
    """Answer to a direct hop (`ScheduleCall` to a scheduler, `Dispatch` to an engine, over core
    NATS request/reply). `taken`: the receiver did what a JetStream ack would have meant (the
    scheduler dispatched the call or found nothing to do; the engine holds the call). Otherwise,
    or without an answer in time, the sender falls back to the JetStream subject; see
    `autellix.direct` for why that is always safe."""

    type: Literal["direct_reply"] = "direct_reply"
    taken: bool
    reason: str = Field(default="", description="why not taken: busy, draining, retry, invalid")


class Control(_Extensible):
    """Scheduler → engine control (idempotent): preempt a call, move it to a level, cancel it.

    `seq` is the call's control counter in Postgres (`calls.control_seq`, bumped in the same
    statement that records the decision), so it grows across scheduler replicas; an engine
    ignores a message whose `seq` is not above the last one it applied to that call.
    """

    type: Literal["control"] = "control"
    action: Literal["preempt", "set_level", "cancel"]
    call_id: str
    level: int | None = None
    reason: str = ""
    seq: int = 0
    tiebreak: float | None = Field(
        default=None, description="new order key inside the level (anti-starvation age rule)"
    )


class EngineWork(_Extensible):
    """What an engine's backend has done since it started (cumulative counters, from the
    backend's own per-step statistics; the vLLM backend fills them). Why in heartbeats: whether a
    policy is slower because the engine ran slower steps, ran fewer calls per step, or had more
    prompt tokens to compute is otherwise invisible from outside the engine."""

    steps: int = 0
    generated_tokens: int = 0
    prompt_tokens: int = 0  # scheduled for prefill, cached ones included
    cached_prompt_tokens: int = 0  # of those, prefix-cache hits
    busy_s: float = Field(default=0.0, description="time spent in steps with calls running")
    running_sum: int = Field(default=0, description="calls running, summed over steps")
    idle_slot_steps: int = Field(
        default=0, description="steps with a free batch slot and nothing waiting in the backend"
    )

    def summary(self) -> dict[str, float | int]:
        """The counters plus what one compares across runs (per step, per batch)."""
        steps = max(1, self.steps)
        return {
            **self.model_dump(),
            "step_ms": 1000.0 * self.busy_s / steps,
            "mean_batch": self.running_sum / steps,
            "idle_slot_fraction": self.idle_slot_steps / steps,
            "computed_prompt_tokens": self.prompt_tokens - self.cached_prompt_tokens,
        }


class EngineHeartbeat(_Extensible):
    type: Literal["heartbeat"] = "heartbeat"
    engine_id: str
    backend: str
    model: str
    max_batch: int
    running: int
    waiting: int
    kv_cache_usage: float = 0.0
    queue_depths: list[int] = Field(default_factory=list)
    at: datetime
    draining: bool = Field(
        default=False, description="shutting down: finishing its calls, send it no new ones"
    )
    prefix_cache_hit_rate: float | None = None
    work: EngineWork | None = Field(
        default=None, description="cumulative work since start (backends that count it)"
    )


class CallProgress(_Extensible):
    call_id: str
    program_id: str
    thread_id: str
    tokens: int = Field(description="completion tokens generated so far")
    running: bool
    service: float | None = Field(
        default=None, description="attained service units so far (tokens + weighted prefill)"
    )
    run_s: float | None = Field(default=None, description="seconds admitted in a batch so far")


class ServiceReport(_Extensible):
    """Engine → schedulers: progress of running calls (bounded rate) for service accounting."""

    type: Literal["report"] = "report"
    engine_id: str
    at: datetime
    calls: list[CallProgress]


# --------------------------------------------------------------------------- helpers


def parse_call_request(data: bytes) -> CallRequest | CallError:
    """Decode and validate raw bytes from the bus. Never raises: bad input → a typed error."""
    import json

    if len(data) > MAX_MESSAGE_BYTES:
        return CallError(
            code=ErrorCode.message_too_large,
            message=f"message is {len(data)} bytes; the limit is {MAX_MESSAGE_BYTES}",
        )
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return CallError(code=ErrorCode.invalid_json, message=f"request is not valid JSON: {exc}")
    if not isinstance(obj, dict):
        return CallError(code=ErrorCode.validation_error, message="request must be a JSON object")
    version = obj.get("v", PROTOCOL_VERSION)
    if version != PROTOCOL_VERSION:
        return CallError(
            code=ErrorCode.unsupported_version,
            message=f"protocol version {version!r} is not supported; this server speaks v1",
        )
    return validate_model(CallRequest, obj)


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
        "call_cancel": CallCancel,
        "call_cancel_reply": CallCancelReply,
        "schedule_call": ScheduleCall,
        "dispatch": Dispatch,
        "direct_reply": DirectReply,
        "control": Control,
        "engine_heartbeat": EngineHeartbeat,
        "service_report": ServiceReport,
    }
    out = {name: model.model_json_schema() for name, model in public.items()}
    out["call_reply"] = CALL_REPLY.json_schema()
    return out
