"""Request and response bodies of the OpenAI-compatible HTTP API (`http.py`), as pydantic models.

Why models and not dicts: FastAPI validates requests against them (bad input → 400 with the
offending field named) and the committed OpenAPI document (`docs/openapi.json`) is generated
from them, so the document and the server cannot drift.

Requests accept the OpenAI fields an agent framework sends: tools (`tools`, `tool_choice`,
`parallel_tool_calls`, assistant `tool_calls` and `tool` turns), `response_format` (JSON object or
schema, enforced by the engine's constrained decoding), `n` (as n calls: `http_fanout.py`),
`seed`, `stop`, penalties and `logprobs` / `top_logprobs` (real engines only). Parameters we
cannot honour (`logit_bias`, `echo`, ...) are refused with a 400 that names them
(`unsupported()`), rather than silently ignored; fields OpenAI added that we do not know are
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


#: most choices (`n`) one request may ask for, OpenAI's own bound: each choice is a call, so an
#: unbounded `n` let one request queue millions of calls past the back-pressure bound
MAX_CHOICES = 128


class _Sampling(AutellixFields):
    model: str = Field(min_length=1, description="recorded with the call; see GET /v1/models")
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int | None = Field(
        default=None, ge=1, le=MAX_CHOICES, description=f"choices, at most {MAX_CHOICES}"
    )
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    repetition_penalty: float | None = Field(
        default=None, gt=0.0, le=10.0, description="vLLM extension"
    )
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    metadata: dict[str, str] | None = Field(default=None, description="stored with the call")


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessageIn] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = Field(
        default=None, description="log-probability of each output token (vLLM engines)"
    )
    top_logprobs: int | None = Field(
        default=None, ge=0, le=20, description="candidates per position (needs logprobs)"
    )
    tools: list[dict[str, Any]] | None = Field(
        default=None, description="function tools, rendered by the model's chat template"
    )
    tool_choice: str | dict[str, Any] | None = Field(
        default=None,
        description='"auto" (default with tools), "none", "required", or '
        '{"type": "function", "function": {"name": ...}}; the last two are enforced by '
        "constrained decoding",
    )
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = Field(
        default=None,
        description='{"type": "text" | "json_object"} or {"type": "json_schema", "json_schema": '
        '{"name": ..., "schema": {...}}}, enforced by constrained decoding',
    )


class CompletionRequest(_Sampling):
    prompt: str | list[str] | list[int] | list[list[int]] = Field(
        description="text, or token ids (the only form engines without a tokenizer take)"
    )
    max_tokens: int | None = Field(default=16, ge=1, description="OpenAI's default is 16")
    echo: bool | None = None
    suffix: str | None = None
    best_of: int | None = None
    logprobs: int | None = Field(
        default=None, ge=0, le=20, description="logprobs of each token and this many candidates"
    )


def unsupported(req: ChatCompletionRequest | CompletionRequest) -> list[tuple[str, str]]:
    """(param, why) for every parameter set to something this server cannot do."""
    out: list[tuple[str, str]] = []
    if req.logit_bias:
        out.append(("logit_bias", "logit_bias is not supported"))
    if isinstance(req, ChatCompletionRequest):
        if req.top_logprobs is not None and not req.logprobs:
            out.append(("top_logprobs", "top_logprobs needs logprobs: true"))
    else:
        if req.echo:
            out.append(("echo", "echo is not supported"))
        if req.suffix:
            out.append(("suffix", "suffix is not supported"))
        if (req.best_of or 1) != 1:
            out.append(("best_of", "best_of is not supported"))
    return out


def logprobs_asked(req: ChatCompletionRequest | CompletionRequest) -> int | None:
    """Candidates per position the request asks logprobs for (None: no logprobs)."""
    if isinstance(req, ChatCompletionRequest):
        return (req.top_logprobs or 0) if req.logprobs else None
    return req.logprobs


class ProgramOpenBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    program_id: str | None = Field(default=None, description="omit to have one assigned")
    metadata: dict[str, str] = Field(default_factory=dict)


class ProgramCancelBody(BaseModel):
    """`POST /v1/programs/{id}/cancel` (the body is optional)."""

    model_config = ConfigDict(extra="forbid")
    reason: str = Field(default="", description="recorded with each cancelled call")
    close: bool = Field(default=False, description="close the program first (no new calls)")


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


class FunctionCallOut(BaseModel):
    name: str
    arguments: str = Field(description="JSON text")


class ToolCallOut(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallOut


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[ToolCallOut] | None = None


FinishReason = Literal["stop", "length", "tool_calls"]


class TopLogprobOut(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprobOut(TopLogprobOut):
    top_logprobs: list[TopLogprobOut]


class ChoiceLogprobs(BaseModel):
    """A chat choice's (or chunk's) `logprobs`: one entry per output token."""

    content: list[TokenLogprobOut] | None
    refusal: list[TokenLogprobOut] | None = None


class CompletionLogprobs(BaseModel):
    """A completion choice's `logprobs` (the legacy shape): parallel lists per token;
    `text_offset` is each token's character offset in the choice's text."""

    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: FinishReason
    logprobs: ChoiceLogprobs | None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: UsageOut
    system_fingerprint: str | None = None
    autellix: AutellixInfo


class FunctionCallDelta(BaseModel):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(BaseModel):
    """Part of a streamed tool call: `id`, `type` and `function.name` on its first delta, then
    `function.arguments` fragments; `index` says which call (clients join by index)."""

    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionCallDelta


class ChunkDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChatChunkChoice(BaseModel):
    index: int = 0
    delta: ChunkDelta
    finish_reason: FinishReason | None = None
    logprobs: ChoiceLogprobs | None = None


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
    logprobs: CompletionLogprobs | None = None


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


class ProgramCancelOut(BaseModel):
    program_id: str
    status: str
    cancelled: list[str] = Field(description="ids of the calls this request cancelled")
