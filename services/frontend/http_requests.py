"""OpenAI request bodies → protocol `CallRequest`s: what `build_call` makes of a chat or
completion request and its headers.

Program, thread, parents and idempotency key come from `X-Autellix-*` / `Idempotency-Key`
headers or the body's fields (the two must agree); sampling fields map onto `SamplingParams`;
chat messages (assistant `tool_calls`, `role: tool` results) and `tools` / `tool_choice` /
`response_format` become the call's messages and its output plan (`tool_parsers.request`);
parameters no backend takes are refused by name, never ignored.
"""

from __future__ import annotations

import json
from typing import Any

from autellix.services.frontend import openai_schema as oa
from autellix.services.frontend.http_errors import ApiError
from autellix.services.frontend.tool_parsers.request import (
    BadToolRequest,
    OutputPlan,
    ToolFields,
    tool_fields,
)
from autellix.wire.protocol import CallError, CallRequest, validate_model

HDR_PROGRAM = "x-autellix-program-id"
HDR_THREAD = "x-autellix-thread-id"
HDR_PARENTS = "x-autellix-parent-ids"
HDR_IDEMPOTENCY = "idempotency-key"


def _header_ids(headers: Any, body: oa.AutellixFields) -> dict[str, Any]:
    """Program, thread, parents and idempotency key from headers and body (must agree)."""

    def pick(name: str, header: str) -> str | None:
        from_body = getattr(body, name)
        from_header = (headers.get(header) or "").strip() or None
        if from_body is not None and from_header is not None and from_body != from_header:
            raise ApiError(
                400,
                f"{name} is {from_body!r} in the body but {from_header!r} in header {header}",
                param=name,
            )
        return from_body if from_body is not None else from_header

    parents_hdr = [p.strip() for p in (headers.get(HDR_PARENTS) or "").split(",") if p.strip()]
    if body.parent_ids is not None and parents_hdr and body.parent_ids != parents_hdr:
        raise ApiError(
            400, f"parent_ids differ between the body and {HDR_PARENTS}", param="parents"
        )
    return {
        "program_id": pick("program_id", HDR_PROGRAM),
        "thread_id": pick("thread_id", HDR_THREAD),
        "parent_ids": body.parent_ids if body.parent_ids is not None else parents_hdr,
        "client_call_id": pick("client_call_id", HDR_IDEMPOTENCY),
    }


def _sampling(body: oa._Sampling, max_tokens: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if max_tokens is not None:
        out["max_tokens"] = max_tokens
    for name in (
        "temperature",
        "top_p",
        "seed",
        "ignore_eos",
        "stop_token_ids",
        "presence_penalty",
        "frequency_penalty",
        "repetition_penalty",
    ):
        value = getattr(body, name)
        if value is not None:
            out[name] = value
    if body.stop is not None:
        out["stop"] = [body.stop] if isinstance(body.stop, str) else list(body.stop)
    top = oa.logprobs_asked(body)  # type: ignore[arg-type]
    if top is not None:
        out["logprobs"] = top
    return out


def _chat_messages(body: oa.ChatCompletionRequest) -> list[dict[str, Any]]:
    out = []
    for i, m in enumerate(body.messages):
        content = m.content
        if isinstance(content, list):
            texts = []
            for j, part in enumerate(content):
                if part.type not in ("text", "input_text") or part.text is None:
                    raise ApiError(
                        400,
                        f"messages[{i}].content[{j}]: content type {part.type!r} is not "
                        "supported (text only)",
                        param=f"messages.{i}.content.{j}",
                    )
                texts.append(part.text)
            content = "\n".join(texts)
        msg: dict[str, Any] = {
            "role": "tool" if m.role == "function" else m.role,
            "content": content or "",
        }
        if m.name:
            msg["name"] = m.name
        if m.tool_calls:  # the assistant's earlier calls: the chat template renders them
            msg["tool_calls"] = [_tool_call_in(i, j, tc) for j, tc in enumerate(m.tool_calls)]
        if m.tool_call_id:
            msg["tool_call_id"] = m.tool_call_id
        out.append(msg)
    return out


def _tool_call_in(i: int, j: int, tc: dict[str, Any]) -> dict[str, Any]:
    """An assistant message's tool call in the protocol's shape; arguments kept as JSON text
    (an object is serialised: some clients send it decoded)."""
    fn = tc.get("function")
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise ApiError(
            400,
            f"messages[{i}].tool_calls[{j}] needs function.name",
            param=f"messages.{i}.tool_calls.{j}.function",
        )
    args = fn.get("arguments", "{}")
    return {
        "id": str(tc.get("id") or f"call_{i}_{j}"),
        "type": "function",
        "function": {
            "name": fn["name"],
            "arguments": args if isinstance(args, str) else json.dumps(args),
        },
    }


def output_plan(body: oa.ChatCompletionRequest, tool_parser: str | None = None) -> OutputPlan:
    """How the answer to `body` is read: text, or tool calls (see `tool_parsers.request`)."""
    return _tool_fields(body, tool_parser).plan


def _tool_fields(body: oa.ChatCompletionRequest, tool_parser: str | None) -> ToolFields:
    try:
        return tool_fields(
            body.tools,
            body.tool_choice,
            body.parallel_tool_calls,
            body.response_format,
            model=body.model,
            parser=tool_parser,
        )
    except BadToolRequest as exc:
        raise ApiError(400, str(exc), param=exc.param) from None


def _completion_prompt(body: oa.CompletionRequest) -> dict[str, Any]:
    p = body.prompt
    if isinstance(p, str):
        return {"prompt": p}
    if p and all(isinstance(x, int) for x in p):
        return {"prompt_token_ids": list(p)}
    if len(p) == 1:
        only = p[0]
        return {"prompt": only} if isinstance(only, str) else {"prompt_token_ids": list(only)}
    raise ApiError(
        400,
        "one prompt per request (batches are not supported): send several requests, e.g. as "
        "parallel threads of one program",
        param="prompt",
    )


def build_call(
    body: oa.ChatCompletionRequest | oa.CompletionRequest,
    headers: Any,
    tool_parser: str | None = None,
) -> tuple[CallRequest, bool]:
    """The protocol `CallRequest` for an HTTP body (+ whether it is a one-call program)."""
    problems = oa.unsupported(body)
    if problems:
        param = problems[0][0]
        raise ApiError(400, "; ".join(w for _, w in problems), param=param, code="unsupported")
    ids = _header_ids(headers, body)
    one_call = ids["program_id"] is None
    if one_call:
        from autellix.store.programs import new_program_id

        ids["program_id"] = new_program_id()
    obj: dict[str, Any] = {k: v for k, v in ids.items() if v is not None}
    obj["model"] = body.model
    obj["stream"] = bool(body.stream)  # a non-streamed answer needs no token deltas
    if body.metadata:
        obj["metadata"] = dict(body.metadata)
    if isinstance(body, oa.ChatCompletionRequest):
        obj["messages"] = _chat_messages(body)
        fields = _tool_fields(body, tool_parser)
        if fields.tools is not None:
            obj["tools"] = fields.tools
        if fields.structured is not None:
            obj["structured"] = fields.structured
        obj["sampling"] = _sampling(body, body.max_completion_tokens or body.max_tokens)
    else:
        obj.update(_completion_prompt(body))
        obj["sampling"] = _sampling(body, body.max_tokens)
    parsed = validate_model(CallRequest, obj)
    if isinstance(parsed, CallError):
        raise ApiError.from_call_error(parsed)
    return parsed, one_call
