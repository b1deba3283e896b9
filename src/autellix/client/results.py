"""`CallResult`: what a finished call returns to its caller.

The engine's `CallFinal` plus what only the client can know: the thread it ran in, whether the
frontend answered a duplicate (`client_call_id` seen before), and the latencies the caller saw.
"""

from __future__ import annotations

from dataclasses import dataclass

from autellix.wire.protocol import EngineInfo, Timing, TokenLogprob, Usage

__all__ = ["CallResult"]


@dataclass(frozen=True)
class CallResult:
    call_id: str
    program_id: str
    thread_id: str
    token_ids: list[int]
    text: str | None
    finish_reason: str
    usage: Usage
    timing: Timing
    engine: EngineInfo
    preemptions: int = 0
    level: int = 0
    duplicate: bool = False
    latency_s: float = 0.0  # as seen by the client: submit → final
    first_token_s: float | None = None  # submit → first delta
    #: per-token log-probabilities when the call asked (`logprobs=`): one per token id, or
    #: None where they could not be kept (see docs/clients.md "Logprobs")
    logprobs: list[TokenLogprob] | None = None

    @property
    def engine_id(self) -> str:
        return self.engine.engine_id
