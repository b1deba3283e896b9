"""What callers send: calls (`CallRequest` with its messages, tools, sampling and structured
output), program open/close/cancel, call cancel and resume.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, model_validator

from autellix.wire.base import (
    MAX_PROMPT_CHARS,
    MAX_PROMPT_TOKENS,
    MAX_TOKEN_ID,
    MAX_TOP_LOGPROBS,
    Id,
    _Msg,
)


def _no_nul(value: str | None) -> str | None:
    """NUL characters and lone surrogates (`"\\ud800"`, valid JSON but not Unicode text) are
    refused: Postgres text cannot store either, UTF-8 cannot encode a lone surrogate, and no
    tokenizer needs them, so they are a caller's mistake (or an attack), not an internal error."""
    if value is None:
        return value
    if "\x00" in value:
        raise ValueError("must not contain NUL characters (\\u0000)")
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            raise ValueError("must not contain lone surrogates (\\ud800-\\udfff)") from None
    return value


Text = Annotated[str, AfterValidator(_no_nul)]
TokenId = Annotated[int, Field(ge=0, le=MAX_TOKEN_ID)]
#: a count or number that Postgres keeps in an int4 column (attempts, levels, control seqs):
#: bounded on the wire, so a forged message is refused at parse instead of failing a statement
PgInt = Annotated[int, Field(ge=0, le=2**31 - 1)]


class FunctionCall(_Msg):
    """A function the model called: its name and its arguments as a JSON text (OpenAI's shape)."""

    name: Text = Field(min_length=1, max_length=256)
    arguments: Text = Field(default="{}", max_length=MAX_PROMPT_CHARS)


class ToolCall(_Msg):
    """One tool call of an earlier assistant turn, kept in the conversation (OpenAI's shape)."""

    id: Text = Field(max_length=256)
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Msg):
    """One chat turn. An assistant turn may carry the `tool_calls` it made; a `tool` turn is the
    result of the call named by `tool_call_id`. The model's chat template renders both."""

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: Text = Field(max_length=MAX_PROMPT_CHARS)
    name: Text | None = None
    tool_calls: list[ToolCall] | None = Field(default=None, max_length=128)
    tool_call_id: Text | None = Field(default=None, max_length=256)


class StructuredOutput(_Msg):
    """A constraint on what the model may generate, enforced by the engine's constrained
    decoding (vLLM's structured outputs): exactly one of a JSON Schema or "any JSON object".

    Why in the call and not the frontend: only the engine's sampler can make a model's output
    valid by construction; an engine whose backend cannot (the simulated one) refuses the call
    with `unsupported_on_backend` rather than answering something unconstrained."""

    json_schema: dict[str, Any] | None = Field(
        default=None, description="the output is one JSON document valid against this schema"
    )
    json_object: bool = Field(default=False, description="the output is one JSON object")

    @model_validator(mode="after")
    def _one_kind(self) -> StructuredOutput:
        if (self.json_schema is not None) == self.json_object:
            raise ValueError("set exactly one of json_schema, json_object")
        return self


class SamplingParams(_Msg):
    """What vLLM's SamplingParams needs; validated here so engines never see nonsense."""

    max_tokens: int = Field(default=256, ge=1, le=MAX_PROMPT_TOKENS)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = None
    stop: list[Text] = Field(default_factory=list, max_length=16)
    stop_token_ids: list[TokenId] = Field(default_factory=list, max_length=64)
    ignore_eos: bool = False
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    repetition_penalty: float = Field(
        default=1.0, gt=0.0, le=10.0, description="vLLM's: > 1 discourages repeats, 1 = off"
    )
    logprobs: int | None = Field(
        default=None,
        ge=0,
        le=MAX_TOP_LOGPROBS,
        description="log-probabilities of each sampled token plus this many most likely "
        "candidates per position (0: the sampled token's only); None: none",
    )

    def penalised(self) -> bool:
        """Whether any penalty is set (a backend that cannot apply them must refuse)."""
        return bool(self.presence_penalty or self.frequency_penalty) or (
            self.repetition_penalty != 1.0
        )


class CallRequest(_Msg):
    """One tagged LLM call. Exactly one of `prompt`, `messages`, `prompt_token_ids` is set."""

    v: Literal[1] = Field(default=1, description="protocol version")
    program_id: Id
    thread_id: Id = "main"
    parent_ids: list[Id] = Field(default_factory=list, max_length=1024)
    client_call_id: Id | None = Field(
        default=None, description="idempotency key: resubmitting it returns the same call"
    )
    model: Text | None = Field(default=None, max_length=256)
    prompt: Text | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    messages: list[ChatMessage] | None = Field(default=None, max_length=4096)
    prompt_token_ids: list[TokenId] | None = Field(default=None, max_length=MAX_PROMPT_TOKENS)
    sampling: SamplingParams = Field(default_factory=SamplingParams)
    tools: list[dict[str, Any]] | None = Field(
        default=None,
        max_length=128,
        description="OpenAI tool definitions, rendered into the prompt by the model's chat "
        "template (chat messages only)",
    )
    structured: StructuredOutput | None = Field(
        default=None, description="constrained decoding (engines whose backend can: vllm)"
    )
    metadata: dict[Text, Text] = Field(default_factory=dict, max_length=32)
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
        if self.tools is not None and self.messages is None:
            raise ValueError("tools need chat messages (the chat template renders them)")
        return self


class ProgramOpen(_Msg):
    v: Literal[1] = 1
    program_id: Id | None = Field(default=None, description="omit to have one assigned")
    metadata: dict[Text, Text] = Field(default_factory=dict, max_length=32)


class ProgramClose(_Msg):
    v: Literal[1] = 1
    program_id: Id
    cancel: bool = Field(
        default=False,
        description="also cancel the program's unfinished calls (as `ProgramCancel`); "
        "without it they run to their end",
    )


class ProgramCancel(_Msg):
    """Cancel every unfinished call of a program (queued or on any engine), each as one
    `CallCancel` would: its caller gets `CallError(cancelled)`, its engine a `Control(cancel)`
    that frees its batch slot and KV. Idempotent; the program stays open unless `close`."""

    v: Literal[1] = Field(default=1, description="protocol version")
    program_id: Id
    reason: Text = Field(default="", max_length=500, description="recorded with each call")
    close: bool = Field(default=False, description="close the program first (no new calls)")


class CallCancel(_Msg):
    """Cancel a call: by `call_id`, or by `program_id` + `client_call_id` (the caller's
    idempotency key, usable before `CallAccepted` arrived). Idempotent: cancelling a call that
    already ended (or was cancelled) changes nothing and says so in the reply."""

    v: Literal[1] = Field(default=1, description="protocol version")
    call_id: Id | None = None
    program_id: Id | None = None
    client_call_id: Id | None = None
    reason: Text = Field(default="", max_length=500, description="recorded with the call")

    @model_validator(mode="after")
    def _one_key(self) -> CallCancel:
        by_id = self.call_id is not None and self.client_call_id is None
        by_key = (
            self.call_id is None and self.program_id is not None and self.client_call_id is not None
        )
        if not (by_id or by_key):
            raise ValueError("set call_id, or (instead) program_id and client_call_id")
        return self


class CallResume(_Msg):
    """Ask where a call stands, answered from Postgres (not from the bus): a caller that may
    have missed replies (its NATS connection was cut, or nothing arrived for a while) gets the
    stored tokens from `offset` on and, once the call has ended, its final answer. By `call_id`
    or by `client_call_id`, always within `program_id`: a call id of another program is
    `unknown`. Read-only, so safe to repeat."""

    v: Literal[1] = Field(default=1, description="protocol version")
    program_id: Id
    call_id: Id | None = None
    client_call_id: Id | None = None
    offset: int = Field(
        default=0, ge=0, le=MAX_PROMPT_TOKENS, description="tokens the caller already has"
    )

    @model_validator(mode="after")
    def _one_key(self) -> CallResume:
        if (self.call_id is None) == (self.client_call_id is None):
            raise ValueError("set call_id or client_call_id (one of them)")
        return self
