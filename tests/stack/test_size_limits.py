"""One size limit, at the door: the NATS server's max_payload. A call is refused up front when
its request, or any message it would need later (its Dispatch, its CallFinal with every token
id), could exceed it; HTTP bodies over it get 413 in OpenAI's error shape, even at 10 MB."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
from svc_stack import Stack, WireRecorder, stack_fixture

from autellix.wire.protocol import (
    CallAccepted,
    CallError,
    CallFinal,
    CallRequest,
    ChatMessage,
    ErrorCode,
    SamplingParams,
    delivery_size,
)

stack = stack_fixture(http=True, engines={"size-e1": ()})


async def test_a_call_whose_messages_exceed_max_payload_is_refused_up_front(
    stack: Stack, wire: WireRecorder
) -> None:
    limit = wire.nc.max_payload
    # the request itself fits, but its CallFinal (every token id) could not
    big_answer = CallRequest(
        program_id="size-prog", prompt="hi", sampling=SamplingParams(max_tokens=limit // 7)
    )
    assert len(big_answer.model_dump_json()) < limit < delivery_size(big_answer)
    # a prompt that fits a message but not with the Dispatch's envelope
    half = ChatMessage(role="user", content="x" * ((limit - 3000) // 2))
    big_prompt = CallRequest(
        program_id="size-prog", messages=[half, half], sampling=SamplingParams(max_tokens=4)
    )
    for req in (big_answer, big_prompt):
        call = await wire.submit(req)
        await asyncio.wait_for(call.done.wait(), 15)
        (err,) = call.messages
        assert isinstance(err, CallError) and err.code == ErrorCode.message_too_large, err
        assert str(limit) in err.message
    ok = await wire.run(CallRequest(program_id="size-prog", prompt="x" * (limit // 8)), 30)
    assert isinstance(ok.messages[0], CallAccepted) and isinstance(ok.terminal[0], CallFinal)


async def test_http_bodies_over_the_limit_get_413_not_a_reset(
    stack: Stack, wire: WireRecorder
) -> None:
    assert stack.http_url is not None
    limit = wire.nc.max_payload
    async with httpx.AsyncClient(base_url=stack.http_url, timeout=60) as h:
        for size in (limit + 1, 2 * limit, 10 * 1000 * 1000):
            body = json.dumps({"model": "simulated", "prompt": "x" * size}).encode()
            r = await h.post(
                "/v1/completions", content=body, headers={"content-type": "application/json"}
            )
            assert r.status_code == 413, r.text
            assert r.json()["error"]["code"] == "request_too_large"

            async def chunks(payload: bytes = body) -> AsyncIterator[bytes]:  # no Content-Length
                for at in range(0, len(payload), 65536):
                    yield payload[at : at + 65536]

            r = await h.post("/v1/completions", content=chunks())
            assert r.status_code == 413, (size, r.text)
        # under the body limit, but the call's messages could not be delivered: 413 as well
        r = await h.post(
            "/v1/completions",
            json={"model": "simulated", "prompt": "hi", "max_tokens": limit // 7},
        )
        assert r.status_code == 413, r.text
        assert r.json()["error"]["code"] == "request_too_large"
        # and the API still answers
        r = await h.post(
            "/v1/completions", json={"model": "simulated", "prompt": "hi", "max_tokens": 2}
        )
        assert r.status_code == 200, r.text
