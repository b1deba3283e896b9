"""HTTP requests ↔ protocol calls: what the OpenAI-compatible API (`http.py`) runs per request.

* `build_call` turns an OpenAI request body plus headers into a `CallRequest` (program, thread,
  parents and idempotency key from `X-Autellix-*` / `Idempotency-Key` headers or body fields;
  unsupported parameters refused by name);
* `CallRun` makes the call without an extra hop: the frontend's own admission code
  (`accept.accept_call`) runs in this process and hands over its first answer in-process; the
  engine's deltas and final arrive on a reply subject under this process's inbox prefix, routed
  by one wildcard subscription (`ReplyRouter`), de-duplicated by offset like the Python client;
* a request that goes away before its answer (SSE client disconnect, cancelled request task)
  cancels its call (`CallRun.cancel_if_unfinished` → `cancel.cancel_call`), so an abandoned
  request stops burning engine time;
* `ApiError` carries an answer in OpenAI's error shape; `_HTTP_ERRORS` maps protocol error
  codes to HTTP statuses.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from autellix.aio import get_within
from autellix.client import CallFailed
from autellix.protocol import (
    CALL_REPLY,
    CallAccepted,
    CallCancel,
    CallError,
    CallFinal,
    CallRequest,
    EngineHeartbeat,
    ErrorCode,
    Subjects,
    TokenDelta,
    validate_model,
)
from autellix.services.frontend import openai_schema as oa
from autellix.services.frontend.accept import accept_call
from autellix.services.frontend.cancel import cancel_call

HDR_PROGRAM = "x-autellix-program-id"
HDR_THREAD = "x-autellix-thread-id"
HDR_PARENTS = "x-autellix-parent-ids"
HDR_IDEMPOTENCY = "idempotency-key"
PLACEHOLDER = "<|{}|>"
ENGINE_LIVE_S = 5.0

#: protocol error code → (HTTP status, OpenAI error type, OpenAI error code)
_HTTP_ERRORS: dict[ErrorCode, tuple[int, str, str]] = {
    ErrorCode.invalid_json: (400, "invalid_request_error", "invalid_json"),
    ErrorCode.validation_error: (400, "invalid_request_error", "invalid_value"),
    ErrorCode.unsupported_version: (400, "invalid_request_error", "unsupported_version"),
    ErrorCode.message_too_large: (413, "invalid_request_error", "request_too_large"),
    ErrorCode.prompt_too_long: (400, "invalid_request_error", "context_length_exceeded"),
    ErrorCode.program_closed: (400, "invalid_request_error", "program_closed"),
    ErrorCode.no_tokenizer: (400, "invalid_request_error", "no_tokenizer"),
    ErrorCode.cancelled: (400, "invalid_request_error", "cancelled"),
    ErrorCode.no_engine: (503, "server_error", "no_engine"),
    ErrorCode.engine_failed: (502, "server_error", "engine_failed"),
    ErrorCode.timeout: (504, "server_error", "timeout"),
    ErrorCode.internal: (500, "server_error", "internal"),
}


def placeholder(token_ids: list[int]) -> str:
    """Text for tokens from an engine without a tokenizer: `<|id|>` per token."""
    return "".join(PLACEHOLDER.format(t) for t in token_ids)


class ApiError(Exception):
    """An answer in OpenAI's error shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = oa.ErrorResponse(
            error=oa.ErrorBody(message=message, type=type, param=param, code=code)
        )

    @classmethod
    def from_call_error(cls, err: CallError) -> ApiError:
        status, kind, code = _HTTP_ERRORS.get(err.code, (500, "server_error", err.code.value))
        param = None
        if err.details:
            param = str(err.details[0].get("loc") or "") or None
        return cls(status, err.message, type=kind, code=code, param=param)


# --------------------------------------------------------------------------- replies


class ReplyRouter:
    """One wildcard subscription (`<inbox>.*`) for the replies of every call of this process."""

    def __init__(self, nc: Any, log: Any) -> None:
        self.nc = nc
        self.log = log
        self.prefix: str = nc.new_inbox()
        self._queues: dict[str, asyncio.Queue[Any]] = {}
        self._ids = itertools.count()
        self._sub: Any = None

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(f"{self.prefix}.*", cb=self._on_msg)

    async def _on_msg(self, msg: Any) -> None:
        queue = self._queues.get(msg.subject.rsplit(".", 1)[-1])
        if queue is None:
            return  # the request is gone (client disconnected); the call still completes
        try:
            queue.put_nowait(CALL_REPLY.validate_json(msg.data))
        except ValidationError as exc:
            self.log.warning("malformed reply ignored", subject=msg.subject, error=str(exc)[:300])

    def open(self) -> tuple[str, str, asyncio.Queue[Any]]:
        token = f"h{next(self._ids):x}"
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._queues[token] = queue
        return token, f"{self.prefix}.{token}", queue

    def close(self, token: str) -> None:
        self._queues.pop(token, None)

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()


class EngineDirectory:
    """Live engines and their models, from the heartbeats every engine publishes."""

    def __init__(self, nc: Any, subjects: Subjects) -> None:
        self.nc = nc
        self.subjects = subjects
        self._seen: dict[str, tuple[float, EngineHeartbeat]] = {}
        self._sub: Any = None

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(self.subjects.heartbeat, cb=self._on_heartbeat)

    async def _on_heartbeat(self, msg: Any) -> None:
        with contextlib.suppress(ValidationError):
            hb = EngineHeartbeat.model_validate_json(msg.data)
            self._seen[hb.engine_id] = (time.monotonic(), hb)

    def live(self) -> list[EngineHeartbeat]:
        now = time.monotonic()
        return [hb for seen, hb in self._seen.values() if now - seen <= ENGINE_LIVE_S]

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()


@dataclass
class Piece:
    """New tokens of a call (de-duplicated) and their text."""

    token_ids: list[int]
    text: str
    placeholder: bool


@dataclass
class CallRun:
    """One call made for one HTTP request: admission in-process, replies from the router."""

    gateway: Any  # the HttpGateway (router, ctx, log)
    request: CallRequest
    timeout_s: float
    token: str = ""
    queue: asyncio.Queue[Any] | None = None
    accepted: CallAccepted | None = None
    tokens: list[int] = field(default_factory=list)
    pieces: list[str] = field(default_factory=list)
    any_placeholder: bool = False
    final: CallFinal | None = None
    ended: bool = False  # a terminal answer (final, error, our timeout) reached this request

    async def begin(self, headers: dict[str, str]) -> None:
        """Admit the call (raises ApiError if refused); replies start flowing to the queue."""
        self.token, reply_to, self.queue = self.gateway.router.open()
        first: list[CallAccepted | CallError] = []
        queue = self.queue

        async def send(reply: Any) -> None:
            if isinstance(reply, CallAccepted) or (
                isinstance(reply, CallError) and reply.call_id is None
            ):
                first.append(reply)
            else:  # a stored final/error replayed for a duplicate
                queue.put_nowait(reply)

        try:
            await accept_call(self.gateway.ctx, self.request, reply_to, send, headers)
        except Exception as exc:
            self.close()
            self.gateway.log.exception("HTTP call admission failed", error=repr(exc))
            raise ApiError(
                503, f"could not accept the call: {exc!r}", type="server_error", code="unavailable"
            ) from exc
        if not first or isinstance(first[0], CallError):
            self.close()
            err = first[0] if first else CallError(code=ErrorCode.internal, message="no answer")
            assert isinstance(err, CallError)
            raise ApiError.from_call_error(err)
        self.accepted = first[0]

    async def events(self) -> AsyncIterator[Piece | CallFinal]:
        """New tokens as they come, then the final; raises CallFailed on a call error."""
        assert self.queue is not None and self.accepted is not None
        deadline = time.monotonic() + self.timeout_s
        while True:
            wait = deadline - time.monotonic()
            try:
                if wait <= 0:
                    raise TimeoutError
                reply = await get_within(self.queue, wait)
            except TimeoutError:
                self.ended = True  # the call may still finish: not cancelled (see message)
                raise CallFailed(
                    CallError(
                        call_id=self.accepted.call_id,
                        code=ErrorCode.timeout,
                        message=f"no final answer within {self.timeout_s:.0f}s "
                        "(the call may still finish; resubmit with the same Idempotency-Key)",
                        retryable=True,
                    )
                ) from None
            if isinstance(reply, TokenDelta):
                piece = self._take(reply)
                if piece is not None:
                    yield piece
            elif isinstance(reply, CallFinal):
                self.final, self.ended = reply, True
                yield reply
                return
            elif isinstance(reply, CallError):
                self.ended = True
                raise CallFailed(reply)

    def _take(self, delta: TokenDelta) -> Piece | None:
        have = len(self.tokens)
        if delta.offset + len(delta.token_ids) <= have:
            return None  # a replay of tokens already sent
        skip = max(0, have - delta.offset)
        if delta.offset > have:  # a gap should not happen; keep positions anyway
            self.tokens.extend([-1] * (delta.offset - have))
        new = delta.token_ids[skip:]
        self.tokens.extend(new)
        if delta.text is not None and skip == 0:
            text, ph = delta.text, False
        else:  # no tokenizer, or a partial replay whose text cannot be split
            text, ph = placeholder(new), True
        self.any_placeholder |= ph
        self.pieces.append(text)
        return Piece(new, text, ph)

    async def result(self) -> CallFinal:
        async for item in self.events():
            if isinstance(item, CallFinal):
                return item
        raise AssertionError("events() ends with the final")

    def full_text(self) -> tuple[str, bool]:
        """The whole completion's text, and whether it is placeholder text."""
        assert self.final is not None
        if self.final.text is not None:
            return self.final.text, False
        ids = self.final.token_ids if self.final.token_ids is not None else self.tokens
        if self.pieces and len(self.tokens) == len(ids):
            return "".join(self.pieces), self.any_placeholder
        return placeholder(list(ids)), True

    def info(self, placeholder_text: bool = False) -> oa.AutellixInfo:
        assert self.accepted is not None
        f = self.final
        return oa.AutellixInfo(
            call_id=self.accepted.call_id,
            program_id=self.accepted.program_id,
            thread_id=self.request.thread_id,
            engine_id=f.engine.engine_id if f else None,
            backend=f.engine.backend if f else None,
            served_model=f.engine.model if f else None,
            level=f.level if f else None,
            preemptions=f.preemptions if f else None,
            queue_s=f.timing.queue_s if f else None,
            run_s=f.timing.run_s if f else None,
            finish_reason=f.finish_reason if f else None,
            token_ids=(list(f.token_ids) if f.token_ids is not None else self.tokens)
            if f
            else None,
            duplicate=self.accepted.duplicate,
            text_is_placeholder=placeholder_text,
        )

    def close(self) -> None:
        self.gateway.router.close(self.token)

    def cancel_if_unfinished(self, reason: str) -> bool:
        """The HTTP client went away before the answer: cancel the call. Runs in the background
        (this is called while the request's task is being cancelled, where awaiting is not
        safe); True when a cancel was started."""
        if self.accepted is None or self.ended or getattr(self.gateway, "stopping", False):
            return False
        self.ended = True
        self.gateway.spawn(self._cancel(self.accepted.call_id, reason))
        return True

    async def _cancel(self, call_id: str, reason: str) -> None:
        try:
            reply = await cancel_call(
                self.gateway.ctx, self.gateway.nc, CallCancel(call_id=call_id, reason=reason)
            )
            self.gateway.log.info("HTTP call cancelled", call_id=call_id, outcome=reply.outcome)
        except Exception as exc:  # best effort: the call then runs to its end
            self.gateway.log.warning("cancelling a call failed", call_id=call_id, error=repr(exc))


async def until_disconnected(request: Any) -> None:
    """Return when the HTTP client disconnects. Only for a request whose body was read and
    whose response has not started (then nothing else reads `receive`): uvicorn's `receive`
    blocks until the client goes away or the response is complete."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def result_unless_disconnected(run: CallRun, request: Any) -> CallFinal | None:
    """`run.result()`, or None as soon as the client disconnects (the caller cancels the
    call). Why watch: a non-streamed request sends nothing until the end, so the server would
    otherwise only notice a departed client after the call had run to completion."""
    result = asyncio.ensure_future(run.result())
    watch = asyncio.ensure_future(until_disconnected(request))
    gone = True
    try:
        await asyncio.wait({result, watch}, return_when=asyncio.FIRST_COMPLETED)
        gone = not result.done()
    finally:
        watch.cancel()
        if gone:
            result.cancel()
    return None if gone else result.result()


def openai_finish_reason(final: CallFinal) -> str:
    """OpenAI knows stop/length; an aborted call ended early, which clients read as stop."""
    return "length" if final.finish_reason == "length" else "stop"


def outcome_label(run: CallRun, error: CallError | ApiError | None) -> str:
    """How a call ended, for the calls counter: accepted, duplicate or an error code."""
    if isinstance(error, CallError):
        return error.code.value
    if isinstance(error, ApiError):
        return error.body.error.code or "error"
    return "duplicate" if run.accepted is not None and run.accepted.duplicate else "accepted"


def openai_usage(final: CallFinal) -> oa.UsageOut:
    u = final.usage
    return oa.UsageOut(
        prompt_tokens=u.prompt_tokens,
        completion_tokens=u.completion_tokens,
        total_tokens=u.prompt_tokens + u.completion_tokens,
        prompt_tokens_details=oa.PromptTokensDetails(cached_tokens=u.cached_tokens),
    )


# --------------------------------------------------------------------------- requests → calls


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
    for name in ("temperature", "top_p", "seed", "ignore_eos", "stop_token_ids"):
        value = getattr(body, name)
        if value is not None:
            out[name] = value
    if body.stop is not None:
        out["stop"] = [body.stop] if isinstance(body.stop, str) else list(body.stop)
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
        text = content or ""
        if m.tool_calls:  # earlier tool calls of the assistant, kept in the context as JSON
            text = (text + "\n" if text else "") + json.dumps(m.tool_calls)
        msg: dict[str, Any] = {"role": "tool" if m.role == "function" else m.role, "content": text}
        if m.name:
            msg["name"] = m.name
        out.append(msg)
    return out


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
    body: oa.ChatCompletionRequest | oa.CompletionRequest, headers: Any
) -> tuple[CallRequest, bool]:
    """The protocol `CallRequest` for an HTTP body (+ whether it is a one-call program)."""
    problems = oa.unsupported(body)
    if problems:
        param = problems[0][0]
        raise ApiError(400, "; ".join(w for _, w in problems), param=param, code="unsupported")
    ids = _header_ids(headers, body)
    one_call = ids["program_id"] is None
    if one_call:
        from autellix.store.queries import new_program_id

        ids["program_id"] = new_program_id()
    obj: dict[str, Any] = {k: v for k, v in ids.items() if v is not None}
    obj["model"] = body.model
    obj["stream"] = bool(body.stream)  # a non-streamed answer needs no token deltas
    if body.metadata:
        obj["metadata"] = dict(body.metadata)
    if isinstance(body, oa.ChatCompletionRequest):
        obj["messages"] = _chat_messages(body)
        obj["sampling"] = _sampling(body, body.max_completion_tokens or body.max_tokens)
    else:
        obj.update(_completion_prompt(body))
        obj["sampling"] = _sampling(body, body.max_tokens)
    parsed = validate_model(CallRequest, obj)
    if isinstance(parsed, CallError):
        raise ApiError.from_call_error(parsed)
    return parsed, one_call
