"""The HTTP layer's request mapping and reply handling, without a stack."""

from __future__ import annotations

from typing import Any

import pytest

from autellix.services.frontend import openai_schema as oa
from autellix.services.frontend.http_calls import CallRun, placeholder
from autellix.services.frontend.http_errors import ApiError
from autellix.services.frontend.http_requests import build_call
from autellix.wire.protocol import CallError, ErrorCode, TokenDelta


def _chat(**extra: object) -> oa.ChatCompletionRequest:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra}
    return oa.ChatCompletionRequest.model_validate(body)


def test_headers_and_body_fields_become_the_call_tags() -> None:
    headers = {
        "x-autellix-program-id": "agent-1",
        "x-autellix-thread-id": "t1",
        "x-autellix-parent-ids": "c-1, c-2",
        "idempotency-key": "step-9",
    }
    call, one_call = build_call(_chat(max_completion_tokens=9, stop="END", seed=3), headers)
    assert not one_call
    assert (call.program_id, call.thread_id, call.parent_ids) == ("agent-1", "t1", ["c-1", "c-2"])
    assert call.client_call_id == "step-9"
    assert (
        call.sampling.max_tokens == 9 and call.sampling.stop == ["END"] and call.sampling.seed == 3
    )
    body_only, _ = build_call(_chat(program_id="agent-2", parent_ids=["c-3"]), {})
    assert body_only.program_id == "agent-2" and body_only.parent_ids == ["c-3"]


def test_no_program_id_is_a_one_call_program() -> None:
    call, one_call = build_call(_chat(), {})
    assert one_call and call.program_id.startswith("p-") and call.thread_id == "main"


def test_content_parts_are_joined_and_tool_history_kept_for_the_template() -> None:
    body = oa.ChatCompletionRequest.model_validate(
        {
            "model": "m",
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                },
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "x",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                        }
                    ],
                },
                {"role": "tool", "content": "42", "tool_call_id": "x"},
            ],
        }
    )
    call, _ = build_call(body, {})
    assert call.messages is not None
    assert [m.content for m in call.messages] == ["a\nb", "", "42"]
    calls = call.messages[1].tool_calls
    assert calls is not None and calls[0].function.name == "f" and calls[0].id == "x"
    assert call.messages[2].tool_call_id == "x"


@pytest.mark.parametrize(
    ("prompt", "field", "value"),
    [
        ("text", "prompt", "text"),
        ([1, 2], "prompt_token_ids", [1, 2]),
        ([[3, 4]], "prompt_token_ids", [3, 4]),
    ],
)
def test_completion_prompts(prompt: object, field: str, value: object) -> None:
    body = oa.CompletionRequest.model_validate({"model": "m", "prompt": prompt})
    call, _ = build_call(body, {})
    assert getattr(call, field) == value and call.sampling.max_tokens == 16


def test_protocol_errors_map_to_openai_errors() -> None:
    err = ApiError.from_call_error(CallError(code=ErrorCode.prompt_too_long, message="too long"))
    assert err.status == 400 and err.body.error.code == "context_length_exceeded"
    assert ApiError.from_call_error(CallError(code=ErrorCode.no_engine, message="x")).status == 503
    with pytest.raises(ApiError) as bad:
        build_call(_chat(program_id="has space"), {})
    assert bad.value.status == 400 and "program_id" in str(bad.value)


def test_tokens_without_text_get_placeholders_and_replays_are_dropped() -> None:
    import time

    from autellix.client.streaming import CallStream

    run = CallRun(gateway=None, request=build_call(_chat(), {})[0], timeout_s=1.0)
    run.stream = CallStream(run.request, time.monotonic())
    run.tokens = run.stream.tokens

    def take(delta: TokenDelta) -> Any:
        """What the HTTP client gets for one delta: the stream's new part, as a piece."""
        pieces = [run._piece(d) for d in run.stream.deltas(delta)]
        assert len(pieces) <= 1
        return pieces[0] if pieces else None

    first = take(TokenDelta(call_id="c", offset=0, token_ids=[7, 8], text=None))
    assert first is not None and first.text == "<|7|><|8|>" and first.placeholder
    assert take(TokenDelta(call_id="c", offset=0, token_ids=[7, 8], text=None)) is None
    overlap = take(TokenDelta(call_id="c", offset=1, token_ids=[8, 9], text=" b c"))
    assert overlap is not None and overlap.token_ids == [9] and overlap.text == placeholder([9])
    fresh = take(TokenDelta(call_id="c", offset=3, token_ids=[5], text=" d"))
    assert fresh is not None and fresh.text == " d" and not fresh.placeholder
    assert run.tokens == [7, 8, 9, 5]
