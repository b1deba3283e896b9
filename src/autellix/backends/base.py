"""The one interface every engine backend implements.

The engine service (not the backend) owns priorities, level queues, the admitted set and
preemption: a backend only generates tokens for the requests it is handed. Preemption is
"cancel the stream, later call `generate` again with a continuation" — the service builds the
continuation (original prompt + tokens generated so far, remaining max_tokens), so every backend
gets resume-by-recompute for free and vLLM turns it into a prefix-cache hit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from autellix.wire.protocol import EngineWork, StructuredOutput, TokenLogprob


class BackendError(Exception):
    """A request the backend cannot serve; `code` is a protocol error code (prompt_too_long...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One (possibly resumed) generation. `request_id` is unique per attempt."""

    request_id: str
    prompt_token_ids: list[int]
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    priority: int = 0  # rank (level, then order in it), lower first: the backend's own queue order
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    #: constrained decoding; a backend that cannot enforce it raises unsupported_on_backend
    structured: StructuredOutput | None = None
    #: log-probabilities per sampled token plus this many candidates (None: none); a backend
    #: that has no model distribution raises unsupported_on_backend
    logprobs: int | None = None

    def penalised(self) -> bool:
        """Whether any penalty is set (a backend that cannot apply them must refuse)."""
        return bool(self.presence_penalty or self.frequency_penalty) or (
            self.repetition_penalty != 1.0
        )


@dataclass(frozen=True, slots=True)
class TokenChunk:
    """New token ids since the previous chunk; the last chunk has `finish_reason` set."""

    token_ids: list[int]
    finish_reason: str | None = None  # "length" | "stop" | None while running
    cached_prompt_tokens: int | None = None  # prefix-cache hits, reported once when known
    logprobs: list[TokenLogprob] | None = None  # one per token id, when the request asked


@dataclass(frozen=True, slots=True)
class BackendStats:
    """Load figures a heartbeat carries (for the load balancer)."""

    running: int
    waiting: int
    kv_cache_usage: float  # 0..1
    prefix_cache_hit_rate: float | None = None
    work: EngineWork | None = None  # cumulative, for backends that count their steps


@dataclass(slots=True)
class WorkCounter:
    """The mutable counters behind `EngineWork` (a frozen message): each engine step adds to
    plain numbers (cheap enough for every step), `snapshot` builds the message for a heartbeat."""

    steps: int = 0
    generated_tokens: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    busy_s: float = 0.0
    running_sum: int = 0
    idle_slot_steps: int = 0

    def add_step(
        self, *, generated: int, prompt: int, cached: int, busy_s: float, running: int, idle: bool
    ) -> None:
        """One step: tokens it produced, prompt tokens it scheduled (`cached` of them from the
        prefix cache), its length, calls running, and whether a slot was free with none waiting."""
        self.steps += 1
        self.generated_tokens += generated
        self.prompt_tokens += prompt
        self.cached_prompt_tokens += cached
        self.busy_s += busy_s
        self.running_sum += running
        self.idle_slot_steps += int(idle)

    def snapshot(self) -> EngineWork:
        return EngineWork(
            steps=self.steps,
            generated_tokens=self.generated_tokens,
            prompt_tokens=self.prompt_tokens,
            cached_prompt_tokens=self.cached_prompt_tokens,
            busy_s=self.busy_s,
            running_sum=self.running_sum,
            idle_slot_steps=self.idle_slot_steps,
        )


@runtime_checkable
class Backend(Protocol):
    """Async token generator. Cancelling the iterator (task.cancel / aclose) must abort the request
    in the underlying engine promptly and free its batch slot."""

    name: str  # "sim" or "vllm"; shown in every reply and heartbeat
    model: str
    max_batch: int  # the most requests it runs at once (vLLM max_num_seqs)
    max_model_len: int

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def tokenize(self, text: str) -> list[int]:
        """Token ids for a text prompt; raise BackendError('no_tokenizer', ...) if it has none."""
        ...

    def detokenize(self, token_ids: list[int]) -> str | None:
        """Text for token ids, or None when the backend has no tokenizer."""
        ...

    def generate(self, request: GenerationRequest) -> AsyncIterator[TokenChunk]: ...

    def stats(self) -> BackendStats: ...
