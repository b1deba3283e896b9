"""HTTP requests ↔ protocol calls: what the OpenAI-compatible API (`http.py`) runs per request.

* the `CallRequest` itself is built from the OpenAI body by `http_requests.build_call`;
* `CallRun` makes the call without an extra hop: the frontend's own admission code
  (`accept.accept_call`) runs in this process and hands over its first answer in-process; the
  engine's deltas and final arrive on a reply subject under this process's inbox prefix,
  routed by one wildcard subscription (`http_replies.ReplyRouter`), de-duplicated by offset
  like the Python client (its `CallStream`); replies lost on the bus (a NATS restart, a gap in
  the deltas, `RESUME_AFTER_S` of silence) are read back from Postgres (`resume.resume_call`),
  so a stream gets every token once and its final;
* a request that goes away before its answer (SSE client disconnect, cancelled request task)
  cancels its call (`CallRun.cancel_if_unfinished` → `cancel.cancel_call`), so an abandoned
  request stops burning engine time;
* refusals are `http_errors.ApiError` (OpenAI's error shape);
* tenants: with API keys (`http_auth.py`) each request carries its key's tenant
  (`request_tenant`); a call is admitted and registered as that tenant's, and one naming a
  program of another tenant is answered `program_not_found` (404), exactly as a program that
  does not exist is answered by close and cancel (`program_not_found`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from autellix.client import CallFailed
from autellix.client.recovery import fold_resume, resume_request
from autellix.client.streaming import CallStream
from autellix.services.frontend import openai_schema as oa
from autellix.services.frontend.accept import accept_call
from autellix.services.frontend.cancel import cancel_call
from autellix.services.frontend.http_errors import ApiError, program_not_found
from autellix.services.frontend.http_logprobs import chat_logprobs
from autellix.services.frontend.http_replies import RECONNECTED
from autellix.services.frontend.resume import resume_call
from autellix.services.frontend.tool_parsers import extract
from autellix.services.frontend.tool_parsers.request import (
    OutputPlan,
)
from autellix.store.db import db_unavailable
from autellix.transport.aio import get_within
from autellix.wire.protocol import (
    CallAccepted,
    CallCancel,
    CallError,
    CallFinal,
    CallRequest,
    ErrorCode,
    TokenDelta,
    TokenLogprob,
)

PLACEHOLDER = "<|{}|>"
#: an accepted call with no reply for this long is resumed from Postgres (its replies may have
#: been published while NATS was down)
RESUME_AFTER_S = 5.0


def placeholder(token_ids: list[int]) -> str:
    """Text for tokens from an engine without a tokenizer: `<|id|>` per token."""
    return "".join(PLACEHOLDER.format(t) for t in token_ids)


@dataclass
class Piece:
    """New tokens of a call (de-duplicated) and their text."""

    token_ids: list[int]
    text: str
    placeholder: bool
    logprobs: list[TokenLogprob] | None = None


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
    stream: CallStream | None = None  # offsets, gaps; `tokens` is its token list
    ended: bool = False  # a terminal answer (final, error, our timeout) reached this request
    plan: OutputPlan = field(default_factory=OutputPlan)  # how the answer is read (tool calls)
    received_at: float = field(default_factory=time.monotonic)  # for /metrics' latencies
    first_token_at: float | None = None
    #: streamed logprobs, one per token, while every delta brought them (None: not asked, or
    #: tokens came without them: stored tokens after a lost delta, a resumed engine's)
    logprobs: list[TokenLogprob] | None = None
    #: the request's API key's tenant (None: the HTTP API has no keys)
    tenant: str | None = None

    async def begin(self, headers: dict[str, str]) -> None:
        """Admit the call (raises ApiError if refused); replies start flowing to the queue.

        A model no live engine serves is refused by `accept_call` (the rule in
        `live_engines.py`) and answered 404 `model_not_found`, as vLLM answers an unknown model."""
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
            outcome = await accept_call(
                self.gateway.ctx, self.request, reply_to, send, headers, tenant=self.tenant
            )
        except Exception as exc:
            self.close()
            if not db_unavailable(exc):
                self.gateway.log.exception("HTTP call admission failed", error=repr(exc))
                raise ApiError(
                    500, f"could not accept the call: {exc!r}", type="server_error", code="internal"
                ) from exc
            self.gateway.log.warning(
                "HTTP call admission failed: database unavailable", error=repr(exc)
            )
            raise ApiError.from_call_error(
                CallError(
                    code=ErrorCode.unavailable,
                    message=f"could not accept the call, database unavailable: {exc!r}",
                    retryable=True,
                )
            ) from exc
        if outcome.not_owned:  # another tenant's program: as if it did not exist
            self.close()
            raise program_not_found(self.request.program_id)
        if not first or isinstance(first[0], CallError):
            self.close()
            err = first[0] if first else CallError(code=ErrorCode.internal, message="no answer")
            assert isinstance(err, CallError)
            raise ApiError.from_call_error(err)
        self.accepted = first[0]
        self.stream = CallStream(self.request, time.monotonic())
        self.stream.call_id = self.accepted.call_id
        self.tokens = self.stream.tokens
        if self.request.sampling.logprobs is not None:
            self.logprobs = []

    async def events(self) -> AsyncIterator[Piece | CallFinal]:
        """New tokens as they come, then the final; raises CallFailed on a call error."""
        assert self.queue is not None and self.accepted is not None and self.stream is not None
        deadline = time.monotonic() + self.timeout_s
        resume_at = time.monotonic() + RESUME_AFTER_S
        while True:
            now = time.monotonic()
            try:
                if deadline <= now:
                    raise TimeoutError
                reply = await get_within(self.queue, max(0.0, min(deadline, resume_at) - now))
            except TimeoutError:
                if time.monotonic() < deadline:
                    reply = RECONNECTED  # silence: resume as after a reconnect
                else:
                    self.ended = True  # the call may still finish: not cancelled (see message)
                    raise CallFailed(
                        CallError(
                            call_id=self.accepted.call_id,
                            code=ErrorCode.timeout,
                            message=f"no final answer within {self.timeout_s:.0f}s "
                            "(the call may still finish; resubmit with the same "
                            "Idempotency-Key)",
                            retryable=True,
                        )
                    ) from None
            resume_at = time.monotonic() + RESUME_AFTER_S
            if reply is RECONNECTED:
                for item in await self._resume():
                    yield item
                    if isinstance(item, CallFinal):
                        return
                if self.stream.gap:  # saved tokens not yet up to the held deltas
                    resume_at = time.monotonic() + 0.5
            elif isinstance(reply, TokenDelta):
                for delta in self.stream.deltas(reply):
                    yield self._piece(delta)
                if self.stream.gap:
                    resume_at = time.monotonic()
            elif isinstance(reply, CallFinal):
                for delta in self.stream.tail(reply):
                    yield self._piece(delta)
                while self.stream.missing(reply):  # deltas were lost: Postgres has them all
                    pieces = [p for p in await self._resume() if isinstance(p, Piece)]
                    if not pieces:
                        break
                    for piece in pieces:
                        yield piece
                self.final, self.ended = reply, True
                yield reply
                return
            elif isinstance(reply, CallError):
                self.ended = True
                raise CallFailed(reply)

    async def _resume(self) -> list[Piece | CallFinal]:
        """The call's stored tokens past what this stream has and, once it ended, its final
        (read in-process: the frontend has the database itself); an error raises."""
        assert self.stream is not None
        reply = await resume_call(self.gateway.ctx, resume_request(self.stream))
        new, ended = fold_resume(self.stream, reply)
        out: list[Piece | CallFinal] = [self._piece(d) for d in new]
        if isinstance(ended, CallError):
            self.ended = True
            raise CallFailed(ended)
        if isinstance(ended, CallFinal):
            self.final, self.ended = ended, True
            out.append(ended)
        return out

    def _piece(self, delta: TokenDelta) -> Piece:
        """A new delta (from `CallStream`) as the text the HTTP client gets."""
        if delta.text is not None:
            text, ph = delta.text, False
        else:  # no tokenizer, a partial replay, or stored tokens: their text is unknown here
            text, ph = placeholder(delta.token_ids), True
        self.any_placeholder |= ph
        if self.first_token_at is None and delta.token_ids:
            self.first_token_at = time.monotonic()
        self.pieces.append(text)
        lps = delta.logprobs
        if lps is not None and len(lps) != len(delta.token_ids):
            lps = None
        if self.logprobs is not None:
            if lps is None:
                self.logprobs = None
            else:
                self.logprobs.extend(lps)
        return Piece(delta.token_ids, text, ph, lps)

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

    def all_logprobs(self) -> list[TokenLogprob] | None:
        """The whole completion's logprobs (the final's, else the streamed ones), or None when
        they were not asked for or are not known for every token."""
        if self.request.sampling.logprobs is None or self.final is None:
            return None
        got = self.final.logprobs if self.final.logprobs is not None else self.logprobs
        if got is None or len(got) != self.final.usage.completion_tokens:
            return None
        return got

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


def chat_choice(
    plan: OutputPlan, text: str, final: CallFinal, lps: list[TokenLogprob] | None = None
) -> oa.ChatChoice:
    """The non-streamed chat choice: the text, or the tool calls the plan's parser reads in it
    (`finish_reason` `tool_calls` when there are any and the answer was not cut short), with
    the completion's logprobs when asked for."""
    logprobs = chat_logprobs(lps) if lps is not None else None
    reason = openai_finish_reason(final)
    parser = plan.new_parser()
    got = extract(parser, text) if parser is not None else None
    if got is None or not got.calls:
        return oa.ChatChoice(
            message=oa.AssistantMessage(content=text),
            finish_reason=reason,  # type: ignore[arg-type]
            logprobs=logprobs,
        )
    calls = [
        oa.ToolCallOut(id=c.id, function=oa.FunctionCallOut(name=c.name, arguments=c.arguments))
        for c in got.calls
    ]
    return oa.ChatChoice(
        message=oa.AssistantMessage(content=got.content, tool_calls=calls),
        finish_reason="length" if reason == "length" else "tool_calls",
        logprobs=logprobs,
    )


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
