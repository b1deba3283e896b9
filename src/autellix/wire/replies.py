"""What callers get back: `CallAccepted`, `TokenDelta`, `CallFinal`, `CallError` (with its
`ErrorCode`), and the program, cancel and resume replies.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter

from autellix.wire.base import (
    _Extensible,
)


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


class ErrorCode(StrEnum):
    invalid_json = "invalid_json"
    validation_error = "validation_error"
    unsupported_version = "unsupported_version"
    message_too_large = "message_too_large"
    prompt_too_long = "prompt_too_long"
    program_closed = "program_closed"
    model_not_found = "model_not_found"
    no_tokenizer = "no_tokenizer"
    no_engine = "no_engine"
    engine_failed = "engine_failed"
    overloaded = "overloaded"
    undeliverable = "undeliverable"
    cancelled = "cancelled"
    timeout = "timeout"
    unsupported_on_backend = "unsupported_on_backend"
    unavailable = "unavailable"
    internal = "internal"


class CallAccepted(_Extensible):
    type: Literal["accepted"] = "accepted"
    call_id: str
    program_id: str
    duplicate: bool = Field(default=False, description="true when client_call_id was seen before")


class TopLogprob(_Extensible):
    """One candidate token at a position: its text as the engine's tokenizer decodes it alone,
    its UTF-8 bytes (a token may hold part of a character) and its log-probability."""

    token_id: int
    token: str
    logprob: float = Field(le=0.0, description="natural log; -9999.0 stands for -inf")
    bytes: list[int] | None = None


class TokenLogprob(TopLogprob):
    """The sampled token at one position and the most likely candidates there (`top_logprobs`,
    as many as the call asked for, most likely first)."""

    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class TokenDelta(_Extensible):
    type: Literal["delta"] = "delta"
    call_id: str
    offset: int = Field(ge=0, description="index of token_ids[0] within the completion")
    token_ids: list[int]
    text: str | None = None
    logprobs: list[TokenLogprob] | None = Field(
        default=None,
        description="one entry per token of token_ids, when the call asked for logprobs",
    )


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
    logprobs: list[TokenLogprob] | None = Field(
        default=None,
        description="one entry per completion token, when the call asked for logprobs and was "
        "not streamed (a streamed call's deltas carry them)",
    )


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


class ProgramCancelReply(_Extensible):
    """Answer to `ProgramCancel`: the calls this request cancelled (calls that had already
    ended are not listed) and the program's status afterwards."""

    type: Literal["program_cancel"] = "program_cancel"
    program_id: str
    cancelled: list[str] = Field(description="ids of the calls this request ended")
    status: Literal["open", "closed", "expired"]


class CallResumeReply(_Extensible):
    """Answer to `CallResume`. `status`: the call's state (`queued`, `dispatched`, `running`,
    `preempted`, `finished`, `failed`, or `unknown`: no such call in that program). `token_ids`
    are the stored completion tokens from `offset` on: all of them once the call has ended, the
    ones its engine has saved so far (about once a second) while it runs, with their `logprobs`
    when the call asked for them. An ended call also carries its answer: `final` (finished;
    without `token_ids` and `logprobs`: the completion is the caller's first `offset` tokens,
    then `token_ids`) or `error` (failed, cancelled). A call not yet ended goes on replying to
    the caller's inbox as before."""

    type: Literal["resume"] = "resume"
    call_id: str | None = None
    program_id: str
    status: str
    offset: int = 0
    token_ids: list[int] = Field(default_factory=list)
    logprobs: list[TokenLogprob] | None = Field(
        default=None,
        description="one entry per token of token_ids, when the call asked for logprobs and "
        "they are stored",
    )
    final: CallFinal | None = None
    error: CallError | None = None


CallReply = Annotated[
    CallAccepted | TokenDelta | CallFinal | CallError | ProgramReply, Field(discriminator="type")
]
CALL_REPLY = TypeAdapter(CallReply)
#: a list of `TokenLogprob`s as compact JSON (what engines save in `calls.output_logprobs`)
TOKEN_LOGPROBS: TypeAdapter[list[TokenLogprob]] = TypeAdapter(list[TokenLogprob])
