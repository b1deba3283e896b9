"""Messages between services only: `ScheduleCall`, `Dispatch`, `DirectReply`, `Control`,
`EngineWork`, `EngineHeartbeat`, `EngineHeartbeats`, `CallProgress`, `ServiceReport`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, TypeAdapter

from autellix.wire.base import (
    _Extensible,
)
from autellix.wire.replies import TokenLogprob
from autellix.wire.requests import (
    CallRequest,
    PgInt,
    Text,
    TokenId,
)


class ScheduleCall(_Extensible):
    """Frontend → scheduler (JetStream): a call accepted and stored; Postgres has the payload."""

    type: Literal["schedule"] = "schedule"
    call_id: Text
    program_id: Text
    reply_to: Text
    attempt: PgInt = 0
    reason: Text = "new"  # new | redispatch (engine lost) | resume


# Dispatch.min_run_tokens of a non-preemptive policy whose calls still get different levels
# (`plas-np`): the engine never preempts such a run for a better-ranked call.
NEVER_PREEMPT = 2**31 - 1


class Dispatch(_Extensible):
    """Scheduler → engine (JetStream, subject per engine and level)."""

    type: Literal["dispatch"] = "dispatch"
    call_id: Text
    program_id: Text
    thread_id: Text
    reply_to: Text
    level: PgInt
    priority: float = Field(description="program service at dispatch (lower runs first)")
    attempt: PgInt = 0
    request: CallRequest
    resume_token_ids: list[TokenId] = Field(
        default_factory=list, description="tokens already streamed (continuation after a restart)"
    )
    resume_logprobs: list[TokenLogprob] | None = Field(
        default=None,
        description="logprobs of resume_token_ids, one per token, when the call asked for them "
        "and its earlier engine saved them",
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
        le=NEVER_PREEMPT,
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
    control_seq: PgInt = Field(
        default=0, description="the call's Control seq this Dispatch already reflects"
    )


class DirectReply(_Extensible):
    """Answer to a direct hop (`ScheduleCall` to a scheduler, `Dispatch` to an engine, over core
    NATS request/reply). `taken`: the receiver did what a JetStream ack would have meant (the
    scheduler dispatched the call or found nothing to do; the engine holds the call). Otherwise,
    or without an answer in time, the sender falls back to the JetStream subject; see
    `autellix.transport.direct` for why that is always safe."""

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
    call_id: Text
    level: PgInt | None = None
    reason: Text = ""
    seq: PgInt = 0
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
    """An engine's liveness and load, every second; also the model names it answers to."""

    type: Literal["heartbeat"] = "heartbeat"
    engine_id: str
    backend: str
    model: str
    served_models: list[str] = Field(
        default_factory=list,
        description="the model names calls may ask for (vLLM's --served-model-name); empty: "
        "`model` alone",
    )
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

    def names(self) -> list[str]:
        """The model names this engine serves: its served names, or its model."""
        return list(self.served_models) or [self.model]


#: most heartbeats in one `EngineHeartbeats` (~300 bytes each: far below the bus limit)
MAX_BEATS_PER_MESSAGE = 500


class EngineHeartbeats(_Extensible):
    """Many engines' heartbeats in one message, on the same subject: what an engine host
    (`--identities N`) sends, a batch per chunk of its identities, so schedulers hear a
    thousand engines in a few dozen messages a second instead of a thousand."""

    type: Literal["heartbeats"] = "heartbeats"
    beats: list[EngineHeartbeat] = Field(min_length=1, max_length=MAX_BEATS_PER_MESSAGE)


HEARTBEAT_MESSAGE: TypeAdapter[EngineHeartbeat | EngineHeartbeats] = TypeAdapter(
    Annotated[EngineHeartbeat | EngineHeartbeats, Field(discriminator="type")]
)


def heartbeats_in(data: bytes) -> list[EngineHeartbeat]:
    """The heartbeats a message on the heartbeat subject carries (one, or a host's batch);
    raises pydantic's ValidationError (a ValueError) for anything else."""
    msg = HEARTBEAT_MESSAGE.validate_json(data)
    return msg.beats if isinstance(msg, EngineHeartbeats) else [msg]


class CallProgress(_Extensible):
    call_id: Text
    program_id: Text
    thread_id: Text
    tokens: PgInt = Field(description="completion tokens generated so far")
    running: bool
    service: float | None = Field(
        default=None, description="attained service units so far (tokens + weighted prefill)"
    )
    run_s: float | None = Field(default=None, description="seconds admitted in a batch so far")


class ServiceReport(_Extensible):
    """Engine → schedulers: progress of running calls (bounded rate) for service accounting."""

    type: Literal["report"] = "report"
    engine_id: Text
    at: datetime
    calls: list[CallProgress]
