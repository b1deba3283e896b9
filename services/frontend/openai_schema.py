"""Request and response bodies of the OpenAI-compatible HTTP API (`http.py`), as pydantic models.

Why models and not dicts: FastAPI validates requests against them (bad input → 400 with the
offending field named) and the committed OpenAPI document (`docs/openapi.json`) is generated
from them, so the document and the server cannot drift.

Requests accept the OpenAI fields an agent framework sends. Parameters we cannot honour
(`n > 1`, `logprobs`, tools, penalties, `response_format`, ...) are refused with a 400 that names
them (`unsupported()`), rather than silently ignored; fields OpenAI added that we do not know are
ignored (`extra="allow"`), as OpenAI's own SDKs expect of compatible servers. Autellix extensions
(program, thread, parents, idempotency key; vLLM-style `ignore_eos` and `stop_token_ids`) are
optional body fields; the program/thread/parent ids may come from headers instead.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# --------------------------------------------------------------------------- requests


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow")


class AutellixFields(_Lenient):
    """Autellix extensions of the OpenAI request body (`extra_body=` in the OpenAI SDKs)."""

    program_id: str | None = Field(
        default=None,
        description="program (agent session) this call belongs to; same as header "
        "X-Autellix-Program-Id. Omitted: the call is a one-call program of its own.",
    )
    thread_id: str | None = Field(
        default=None, description="thread within the program (header X-Autellix-Thread-Id)"
    )
    parent_ids: list[str] | None = Field(
        default=None,
        description="call ids this call depends on (header X-Autellix-Parent-Ids, comma-separated)",
    )
    client_call_id: str | None = Field(
        default=None,
        description="idempotency key: resubmitting it never runs the call twice "
        "(header Idempotency-Key)",
    )
    ignore_eos: bool | None = Field(default=None, description="vLLM extension: keep generating")
    stop_token_ids: list[int] | None = Field(default=None, description="vLLM extension")


class StreamOptions(_Lenient):
    include_usage: bool = False


class ContentPart(_Lenient):
    type: str
    text: str | None = None


class ChatMessageIn(_Lenient):
    role: Literal["system", "user", "assistant", "tool", "developer", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class _Sampling(AutellixFields):
    model: str = Field(min_length=1, description="recorded with the call; see GET /v1/models")
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int | None = Field(default=None, ge=1)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    metadata: dict[str, str] | None = Field(default=None, description="stored with the call")


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessageIn] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None


class CompletionRequest(_Sampling):
    prompt: str | list[str] | list[int] | list[list[int]] = Field(
        description="text, or token ids (the only form engines without a tokenizer take)"
    )
    max_tokens: int | None = Field(default=16, ge=1, description="OpenAI's default is 16")
    echo: bool | None = None
    suffix: str | None = None
    best_of: int | None = None
    logprobs: int | None = None


def unsupported(req: ChatCompletionRequest | CompletionRequest) -> list[tuple[str, str]]:
    """(param, why) for every parameter set to something this server cannot do."""
    out: list[tuple[str, str]] = []
    if (req.n or 1) != 1:
        out.append(("n", "only n=1 is supported; send parallel requests in one program instead"))
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(req, name):
            out.append((name, f"{name} is not supported"))
    if req.logit_bias:
        out.append(("logit_bias", "logit_bias is not supported"))
    if isinstance(req, ChatCompletionRequest):
        if req.logprobs or req.top_logprobs:
            out.append(("logprobs", "logprobs are not supported"))
        if req.tools and req.tool_choice != "none":
            out.append(("tools", "tool calling is not supported; describe the tools in the prompt"))
        if req.response_format and req.response_format.get("type") not in (None, "text"):
            out.append(("response_format", "only response_format type 'text' is supported"))
    else:
        if req.echo:
            out.append(("echo", "echo is not supported"))
        if req.suffix:
            out.append(("suffix", "suffix is not supported"))
        if (req.best_of or 1) != 1:
            out.append(("best_of", "best_of is not supported"))
        if req.logprobs:
            out.append(("logprobs", "logprobs are not supported"))
    return out


class ProgramOpenBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    program_id: str | None = Field(default=None, description="omit to have one assigned")
    metadata: dict[str, str] = Field(default_factory=dict)


# --------------------------------------------------------------------------- responses


class AutellixInfo(BaseModel):
    """What Autellix adds to a response (`autellix` field): where and how the call ran."""

    call_id: str
    program_id: str
    thread_id: str
    engine_id: str | None = None
    backend: str | None = Field(default=None, description='"sim" (simulated) or "vllm"')
    served_model: str | None = None
    level: int | None = None
    preemptions: int | None = None
    queue_s: float | None = None
    run_s: float | None = None
    finish_reason: str | None = Field(default=None, description="Autellix's own reason")
    token_ids: list[int] | None = None
    duplicate: bool = False
    text_is_placeholder: bool = Field(
        default=False, description="the engine has no tokenizer: text is `<|id|>` per token"
    )


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0


class UsageOut(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails = Field(default_factory=PromptTokensDetails)


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: UsageOut
    system_fingerprint: str | None = None
    autellix: AutellixInfo


class ChunkDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int = 0
    delta: ChunkDelta
    finish_reason: Literal["stop", "length"] | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    """One server-sent event of a streamed chat completion (`data: <json>`; `data: [DONE]` last)."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: UsageOut | None = None
    autellix: AutellixInfo | None = None


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: Literal["stop", "length"] | None = None
    logprobs: None = None


class Completion(BaseModel):
    """A completion, or one streamed chunk of it (same shape, `object` = text_completion)."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: UsageOut | None = None
    autellix: AutellixInfo | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "autellix"
    engines: list[str] = Field(default_factory=list, description="live engines serving it")
    backends: list[str] = Field(default_factory=list, description='"sim" = simulated engine')


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error shape."""

    error: ErrorBody


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    nats: Literal["connected", "disconnected"]
    engines: int = Field(description="engines heard from in the last few seconds")
    models: list[str]


class ProgramStatsOut(BaseModel):
    calls: int
    calls_finished: int
    prompt_tokens: int
    completion_tokens: int
    service: float
    waiting_s: float


class ProgramOut(BaseModel):
    program_id: str
    status: str
    stats: ProgramStatsOut | None = None
