"""`n > 1`: n choices as n calls of one program and thread, answered as one OpenAI response.

Why calls and not n samples in one engine request: every Autellix call is one sequence with its
own stream, service accounting, preemption and resume; n independent calls get all of that for
free and run in parallel (on one engine or several). Each choice `i` is the request with `n = 1`,
`seed + i` when a seed is given (n copies of one seeded call would be n equal answers; vLLM also
gives a seeded n-sample request different samples) and idempotency key `<key>:<i>`. A request
without a program id gets one for its n calls, closed when they end.

Non-streamed, the n answers are merged: choices re-numbered, usage added (the prompt counted
once, as OpenAI does). Streamed, the n event streams are interleaved with each chunk's choice
renumbered; each choice's own usage chunk is held back and one sum sent at the end, then
`[DONE]`. A choice that fails makes the whole request fail with its error.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi.responses import JSONResponse, StreamingResponse

from autellix.services.frontend import openai_schema as oa

RunCall = Callable[[Any, Any, str], Awaitable[Any]]


def choice_bodies(
    body: oa.ChatCompletionRequest | oa.CompletionRequest, program_id: str
) -> list[Any]:
    """The n one-choice bodies of an `n > 1` request (see the module docstring)."""
    n = body.n or 1
    out = []
    for i in range(n):
        update: dict[str, Any] = {"n": 1, "program_id": program_id}
        if body.seed is not None:
            update["seed"] = body.seed + i
        if body.client_call_id is not None:
            update["client_call_id"] = f"{body.client_call_id}:{i}"
        out.append(body.model_copy(update=update))
    return out


def _usage_sum(usages: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not usages:
        return None
    prompt = usages[0]["prompt_tokens"]
    completion = sum(u["completion_tokens"] for u in usages)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": usages[0].get("prompt_tokens_details") or {"cached_tokens": 0},
    }


async def fan_out(
    run_call: RunCall,
    request: Any,
    body: oa.ChatCompletionRequest | oa.CompletionRequest,
    operation: str,
    new_program: Callable[[], str],
    close_program: Callable[[str], None],
) -> Any:
    """Answer an `n > 1` request by running its n choices as calls (module docstring)."""
    given = body.program_id or (request.headers.get("x-autellix-program-id") or "").strip()
    program_id = given or new_program()
    bodies = choice_bodies(body, program_id)
    tasks = [asyncio.ensure_future(run_call(request, b, operation)) for b in bodies]
    try:
        answers = await asyncio.gather(*tasks)
    except BaseException:  # one choice refused (or the request went away): drop the others
        for t in tasks:
            t.cancel()
        if not given:
            close_program(program_id)
        raise
    if body.stream:
        return StreamingResponse(
            _merged_stream(answers, lambda: None if given else close_program(program_id)),
            media_type="text/event-stream",
            headers=_autellix_headers(answers[0]),
        )
    if not given:
        close_program(program_id)
    for a in answers:
        if a.status_code != 200:
            return a  # the first failed choice's error, in OpenAI's shape
    docs = [json.loads(a.body) for a in answers]
    merged = dict(docs[0])
    merged["choices"] = [{**c, "index": i} for i, doc in enumerate(docs) for c in doc["choices"]]
    merged["usage"] = _usage_sum([d["usage"] for d in docs])
    merged["autellix_choices"] = [d.get("autellix") for d in docs]
    return JSONResponse(merged, headers=_autellix_headers(answers[0]))


def _autellix_headers(answer: Any) -> dict[str, str]:
    """The first choice's `x-autellix-*` headers (call, program, trace ids), nothing else: its
    content-length and type belong to its own body."""
    return {k: v for k, v in answer.headers.items() if k.lower().startswith("x-autellix-")}


async def _merged_stream(answers: list[Any], done: Callable[[], None]) -> AsyncIterator[str]:
    queue: asyncio.Queue[tuple[int, str | None]] = asyncio.Queue()

    async def pump(i: int, answer: Any) -> None:
        try:
            if not isinstance(answer, StreamingResponse):  # refused before streaming started
                queue.put_nowait((i, "data: " + answer.body.decode() + "\n\n"))
                return
            async for piece in answer.body_iterator:
                text = piece if isinstance(piece, str) else piece.decode()
                queue.put_nowait((i, text))
        finally:
            queue.put_nowait((i, None))

    tasks = [asyncio.ensure_future(pump(i, a)) for i, a in enumerate(answers)]
    usages: list[dict[str, Any]] = []
    last: dict[str, Any] = {}  # a chunk's id, object, created, model: for the usage chunk
    open_streams = len(tasks)
    try:
        while open_streams:
            i, text = await queue.get()
            if text is None:
                open_streams -= 1
                continue
            for event in text.split("\n\n"):
                if not event.startswith("data: "):
                    continue
                data = event.removeprefix("data: ")
                if data == "[DONE]":
                    continue
                obj = json.loads(data)
                if "error" in obj:
                    yield f"data: {data}\n\n"
                    return
                if not obj.get("choices") and obj.get("usage"):
                    usages.append(obj["usage"])
                    continue
                for choice in obj.get("choices") or []:
                    choice["index"] = i
                last = obj
                yield f"data: {json.dumps(obj)}\n\n"
        usage = _usage_sum(usages)
        if usage is not None:
            chunk = {**last, "choices": [], "usage": usage, "autellix": None}
            yield f"data: {json.dumps(chunk)}\n\n"
        yield "data: [DONE]\n\n"
    finally:
        for t in tasks:
            t.cancel()
        for a in answers:  # closing a choice's stream early cancels its call (http_sse)
            if isinstance(a, StreamingResponse):
                close = getattr(a.body_iterator, "aclose", None)
                if close is not None:
                    await close()
        done()
