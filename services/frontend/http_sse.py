"""The HTTP API's streamed answers: a call's pieces as OpenAI server-sent events.

`chat_stream` and `completion_stream` turn one running call's events into the chunk shapes of
`/v1/chat/completions` and `/v1/completions` with `stream: true`, end with `data: [DONE]`, and
cancel the call when the client goes away before the answer (so it stops using the engine).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from autellix.client import CallFailed
from autellix.services.frontend import openai_schema as oa
from autellix.services.frontend.http_calls import (
    CallRun,
    Piece,
    openai_finish_reason,
    openai_usage,
)
from autellix.services.frontend.http_errors import ApiError
from autellix.services.frontend.http_logprobs import chat_logprobs, completion_logprobs
from autellix.services.frontend.tool_parsers import Event, StreamParser, new_call_id
from autellix.wire.protocol import CallError, ErrorCode

Finished = Callable[..., None]  # (HTTP status, error or None): the request's span and counter
CLIENT_GONE = 499  # nginx's "client closed request": what the span and the counter record


def gone_error(run: CallRun) -> CallError:
    call_id = run.accepted.call_id if run.accepted else None
    return CallError(call_id=call_id, code=ErrorCode.cancelled, message="HTTP client went away")


async def chat_stream(
    run: CallRun, rid: str, created: int, model: str, include_usage: bool, finished: Finished
) -> AsyncIterator[str]:
    def chunk(**kw: Any) -> oa.ChatCompletionChunk:
        return oa.ChatCompletionChunk(id=rid, created=created, model=model, **kw)

    status, error = 200, None
    try:
        yield sse(
            chunk(choices=[oa.ChatChunkChoice(delta=oa.ChunkDelta(role="assistant", content=""))])
        )
        tools = ToolDeltas(run.plan.new_parser())
        # a piece's logprobs ride on the next chunk sent (a tool-call parser may hold text back)
        pending: list[Any] = []
        asked = run.request.sampling.logprobs is not None

        def choice(delta: oa.ChunkDelta) -> oa.ChatChunkChoice:
            lps = chat_logprobs(pending) if asked else None
            pending.clear()
            return oa.ChatChunkChoice(delta=delta, logprobs=lps)

        async for item in run.events():
            if isinstance(item, Piece):
                pending.extend(item.logprobs or ())
                for delta in tools.feed(item.text):
                    yield sse(chunk(choices=[choice(delta)]))
            else:
                for delta in tools.finish():
                    yield sse(chunk(choices=[choice(delta)]))
                if pending:
                    yield sse(chunk(choices=[choice(oa.ChunkDelta())]))
                reason = openai_finish_reason(item)
                if tools.called and reason != "length":
                    reason = "tool_calls"
                yield sse(
                    chunk(
                        choices=[oa.ChatChunkChoice(delta=oa.ChunkDelta(), finish_reason=reason)],  # type: ignore[arg-type]
                        autellix=run.info(run.any_placeholder),
                    )
                )
                if include_usage:
                    yield sse(chunk(choices=[], usage=openai_usage(item)))
        yield "data: [DONE]\n\n"
    except CallFailed as exc:
        api = ApiError.from_call_error(exc.error)
        status, error = api.status, exc.error
        yield sse(api.body.model_dump())
    finally:
        run.close()
        # left before the answer: the client disconnected (Starlette cancels the stream) or
        # the generator was closed; the call is cancelled so it stops using the engine
        if run.cancel_if_unfinished("HTTP client disconnected from the stream"):
            status, error = CLIENT_GONE, gone_error(run)
        finished(status, error)


async def completion_stream(
    run: CallRun, rid: str, created: int, model: str, include_usage: bool, finished: Finished
) -> AsyncIterator[str]:
    def chunk(**kw: Any) -> oa.Completion:
        return oa.Completion(id=rid, created=created, model=model, **kw)

    status, error = 200, None
    at = 0  # characters of text sent so far (text_offset)
    try:
        async for item in run.events():
            if isinstance(item, Piece):
                lps = completion_logprobs(item.logprobs, at) if item.logprobs is not None else None
                at += len(item.text)
                yield sse(chunk(choices=[oa.CompletionChoice(text=item.text, logprobs=lps)]))
            else:
                reason = openai_finish_reason(item)
                yield sse(
                    chunk(
                        choices=[oa.CompletionChoice(text="", finish_reason=reason)],  # type: ignore[arg-type]
                        autellix=run.info(run.any_placeholder),
                    )
                )
                if include_usage:
                    yield sse(chunk(choices=[], usage=openai_usage(item)))
        yield "data: [DONE]\n\n"
    except CallFailed as exc:
        api = ApiError.from_call_error(exc.error)
        status, error = api.status, exc.error
        yield sse(api.body.model_dump())
    finally:
        run.close()
        # left before the answer: the client disconnected (Starlette cancels the stream) or
        # the generator was closed; the call is cancelled so it stops using the engine
        if run.cancel_if_unfinished("HTTP client disconnected from the stream"):
            status, error = CLIENT_GONE, gone_error(run)
        finished(status, error)


class ToolDeltas:
    """Streamed text as chunk deltas: content as it comes, or, with a tool-call parser, the
    parser's content and `tool_calls` deltas (id, type and name on a call's first delta)."""

    def __init__(self, parser: StreamParser | None) -> None:
        self.parser = parser
        self.ids: dict[int, str] = {}

    @property
    def called(self) -> bool:
        return bool(self.ids)

    def feed(self, text: str) -> list[oa.ChunkDelta]:
        if self.parser is None:
            return [oa.ChunkDelta(content=text)]
        return self._deltas(self.parser.feed(text))

    def finish(self) -> list[oa.ChunkDelta]:
        return self._deltas(self.parser.finish()) if self.parser is not None else []

    def _deltas(self, events: list[Event]) -> list[oa.ChunkDelta]:
        out = []
        for e in events:
            if e.index is None:
                if e.content:
                    out.append(oa.ChunkDelta(content=e.content))
                continue
            first = e.index not in self.ids
            if first:
                self.ids[e.index] = new_call_id()
            out.append(
                oa.ChunkDelta(
                    tool_calls=[
                        oa.ToolCallDelta(
                            index=e.index,
                            id=self.ids[e.index] if first else None,
                            type="function" if first else None,
                            function=oa.FunctionCallDelta(
                                name=e.name if first else None, arguments=e.arguments
                            ),
                        )
                    ]
                )
            )
        return out


def sse(obj: Any) -> str:
    """One server-sent event carrying `obj` as JSON."""
    data = obj.model_dump_json(exclude_none=False) if hasattr(obj, "model_dump_json") else obj
    if not isinstance(data, str):
        data = json.dumps(data)
    return f"data: {data}\n\n"
