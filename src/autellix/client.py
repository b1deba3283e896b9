"""Python client for Autellix: programs, threads, calls and token streams over NATS.

```python
async with Client("nats://127.0.0.1:4222", namespace="autellix") as c:
    async with c.program() as p:                      # opens a program, closes it on exit
        r = await p.call(prompt="Plan the trip", max_tokens=64)
        a, b = await asyncio.gather(                  # two parallel threads, both after r
            p.thread("a").call(prompt="...", parents=[r]),
            p.thread("b").call(prompt="...", parents=[r]),
        )
        async for item in p.stream(prompt="Summarize", max_tokens=32):
            if isinstance(item, TokenDelta): print(item.text, end="")
            else: print(item.usage)                   # the CallResult, last
```

How a call travels: the client publishes a `CallRequest` to `Subjects.submit` with a reply
subject under its own inbox prefix (one wildcard subscription serves every call of the client),
then reads `CallAccepted`, `TokenDelta`s and one `CallFinal` (or a `CallError`) from it. Deltas
are de-duplicated by offset (after an engine is lost, its successor may resend tokens the client
already has). Failures raise `CallFailed` carrying the protocol's `CallError` (`.code`,
`.retryable`); a call that takes longer than its timeout raises `CallTimeout`.

To make a call safe to retry, pass `client_call_id`: resubmitting it never runs the call twice,
and returns the stored result if the first attempt already finished.

Cancelling: `await client.cancel(call_id)` (or `program_id=`, `client_call_id=`) stops a call
wherever it is and answers whether it did. A task awaiting `call()` that is cancelled, or a
`stream()` abandoned before its result (task cancelled, generator closed), cancels its call too:
the client sends `CallCancel` best-effort in the background (waiting briefly for the call id if
`CallAccepted` had not arrived yet) and the cancellation propagates at once. A client-side
timeout (`CallTimeout`) does not cancel: the call may still finish and can be collected again
with its `client_call_id`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from autellix import telemetry
from autellix.aio import get_within
from autellix.protocol import (
    CALL_REPLY,
    CallAccepted,
    CallCancel,
    CallCancelReply,
    CallError,
    CallFinal,
    CallRequest,
    ChatMessage,
    EngineInfo,
    ErrorCode,
    ProgramClose,
    ProgramOpen,
    ProgramReply,
    SamplingParams,
    Subjects,
    Timing,
    TokenDelta,
    Usage,
    encode,
)

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"


class CallFailed(Exception):
    """A call (or program request) answered with a `CallError`."""

    def __init__(self, error: CallError) -> None:
        super().__init__(f"{error.code.value}: {error.message}")
        self.error = error

    @property
    def code(self) -> ErrorCode:
        return self.error.code

    @property
    def call_id(self) -> str | None:
        return self.error.call_id

    @property
    def retryable(self) -> bool:
        return self.error.retryable


class CallTimeout(CallFailed, TimeoutError):
    """No final answer within the call's timeout (the call may still finish server-side)."""


@dataclass(frozen=True)
class CallResult:
    call_id: str
    program_id: str
    thread_id: str
    token_ids: list[int]
    text: str | None
    finish_reason: str
    usage: Usage
    timing: Timing
    engine: EngineInfo
    preemptions: int = 0
    level: int = 0
    duplicate: bool = False
    latency_s: float = 0.0  # as seen by the client: submit → final
    first_token_s: float | None = None  # submit → first delta

    @property
    def engine_id(self) -> str:
        return self.engine.engine_id


@dataclass
class _Pending:
    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)


def _sampling(
    sampling: SamplingParams | dict[str, Any] | None, max_tokens: int | None, **extra: Any
) -> SamplingParams:
    base: dict[str, Any] = {}
    if isinstance(sampling, SamplingParams):
        base = sampling.model_dump()
    elif sampling:
        base = dict(sampling)
    if max_tokens is not None:
        base["max_tokens"] = max_tokens
    base.update({k: v for k, v in extra.items() if v is not None})
    return SamplingParams(**base)


class Client:
    """One NATS connection, any number of programs and concurrent calls."""

    def __init__(
        self,
        nats_url: str | None = None,
        *,
        namespace: str | None = None,
        timeout: float | None = 300.0,
        request_timeout: float = 10.0,
        nc: Any = None,
    ) -> None:
        self.nats_url = nats_url or os.environ.get("AUTELLIX_NATS_URL") or DEFAULT_NATS_URL
        self.subjects = Subjects(namespace or os.environ.get("AUTELLIX_NAMESPACE") or "autellix")
        self.timeout = timeout
        self.request_timeout = request_timeout
        self._nc = nc
        self._own_nc = nc is None
        self._pending: dict[str, _Pending] = {}
        self._ids = itertools.count()
        self._prefix = ""
        self._sub: Any = None
        self._cancels: set[asyncio.Task[None]] = set()  # cancels of abandoned calls in flight

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        if self._nc is None:
            import nats

            self._nc = await nats.connect(
                servers=[u.strip() for u in self.nats_url.split(",")],
                name="autellix-client",
                max_reconnect_attempts=-1,
            )
        self._prefix = self._nc.new_inbox()
        self._sub = await self._nc.subscribe(f"{self._prefix}.*", cb=self._on_reply)

    async def close(self) -> None:
        if self._cancels:  # let cancels of abandoned calls go out before the connection does
            await asyncio.wait(list(self._cancels), timeout=self.request_timeout)
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
        if self._own_nc and self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.drain()
            self._nc = None

    async def _on_reply(self, msg: Any) -> None:
        token = msg.subject.rsplit(".", 1)[-1]
        pending = self._pending.get(token)
        if pending is not None:
            pending.queue.put_nowait(msg)

    # ------------------------------------------------------------------ programs

    def program(
        self, program_id: str | None = None, *, metadata: dict[str, str] | None = None
    ) -> Program:
        """A program handle; use `async with` to open it and close it (also on error)."""
        return Program(self, program_id, dict(metadata or {}))

    async def _roundtrip(
        self, subject: str, body: Any, *, call_id: str | None = None, trace_context: Any = None
    ) -> bytes:
        """One core NATS request to the frontend; no frontend or no answer raise as call errors."""
        from nats.errors import NoRespondersError
        from nats.errors import TimeoutError as NatsTimeout

        try:
            msg = await self._nc.request(
                subject,
                encode(body),
                timeout=self.request_timeout,
                headers=telemetry.inject(context=trace_context) or None,
            )
        except NoRespondersError as exc:
            raise CallFailed(_unavailable(subject)) from exc
        except NatsTimeout as exc:
            message = f"no answer on {subject}"
            raise CallTimeout(
                CallError(call_id=call_id, code=ErrorCode.timeout, message=message)
            ) from exc
        return bytes(msg.data)

    async def _program_request(
        self, subject: str, body: Any, trace_context: Any = None
    ) -> ProgramReply:
        data = await self._roundtrip(subject, body, trace_context=trace_context)
        reply = CALL_REPLY.validate_json(data)
        if isinstance(reply, CallError):
            raise CallFailed(reply)
        if not isinstance(reply, ProgramReply):
            raise CallFailed(
                CallError(code=ErrorCode.internal, message=f"unexpected reply {reply.type}")
            )
        return reply

    # ------------------------------------------------------------------ calls

    async def cancel(
        self,
        call_id: str | None = None,
        *,
        program_id: str | None = None,
        client_call_id: str | None = None,
        reason: str = "",
    ) -> CallCancelReply:
        """Cancel a call by id (or by `program_id` + `client_call_id`). Its caller gets
        `CallError(cancelled)`; an engine running it stops. Safe to repeat: the reply's
        `outcome` says `cancelled`, `already_cancelled`, `already_finished` or `unknown`."""
        if self._nc is None:
            raise RuntimeError("client is not connected (use `async with Client(...)`)")
        body = CallCancel(
            call_id=call_id, program_id=program_id, client_call_id=client_call_id, reason=reason
        )
        obj = json.loads(await self._roundtrip(self.subjects.cancel, body, call_id=call_id))
        if obj.get("type") == "error":
            raise CallFailed(CallError.model_validate(obj))
        return CallCancelReply.model_validate(obj)

    def _abandon(
        self, token: str, pending: _Pending, call_id: str | None, request: CallRequest
    ) -> None:
        """The task reading this call went away: cancel the call in the background (the
        cancelled task must not wait for a round trip). Keeps the inbox routed meanwhile."""
        try:
            task = asyncio.get_running_loop().create_task(
                self._cancel_abandoned(token, pending, call_id, request)
            )
        except RuntimeError:  # no loop any more (interpreter shutdown): nothing to do
            self._pending.pop(token, None)
            return
        self._cancels.add(task)
        task.add_done_callback(self._cancels.discard)

    async def _cancel_abandoned(
        self, token: str, pending: _Pending, call_id: str | None, request: CallRequest
    ) -> None:
        try:
            if call_id is None and request.client_call_id is None:
                call_id = await self._accepted_id(pending)  # submitted, but no id seen yet
                if call_id is None:
                    return  # refused, already answered, or no frontend: nothing runs
            body = (
                CallCancel(call_id=call_id, reason="client task cancelled")
                if call_id is not None
                else CallCancel(
                    program_id=request.program_id,
                    client_call_id=request.client_call_id,
                    reason="client task cancelled",
                )
            )
            if self._nc is not None:
                await self._nc.publish(self.subjects.cancel, encode(body))
        except Exception:  # best effort: the call then runs to its end
            pass
        finally:
            self._pending.pop(token, None)

    async def _accepted_id(self, pending: _Pending) -> str | None:
        """The call id from a `CallAccepted` still to come (None: refused, ended, or silence)."""
        deadline = time.monotonic() + self.request_timeout
        while (wait := deadline - time.monotonic()) > 0:
            try:
                msg = await get_within(pending.queue, wait)
            except TimeoutError:
                return None
            try:
                reply = CALL_REPLY.validate_json(msg.data)
            except ValueError:
                return None
            if isinstance(reply, CallAccepted):
                return reply.call_id
            if isinstance(reply, CallFinal | CallError):
                return None
        return None

    async def submit(
        self,
        request: CallRequest,
        timeout: float | None = None,  # noqa: ASYNC109 - a call's deadline, part of the API
        *,
        trace_context: Any = None,
    ) -> AsyncIterator[TokenDelta | CallResult]:
        """Send one call; yield de-duplicated deltas, then the `CallResult` (raises on error).

        Traced as an `autellix.call` client span, a child of `trace_context` (a program's span
        context) or of the current span; its W3C context travels with the request."""
        if self._nc is None:
            raise RuntimeError("client is not connected (use `async with Client(...)`)")
        token = f"{next(self._ids):x}"
        pending = _Pending()
        self._pending[token] = pending
        reply_to = f"{self._prefix}.{token}"
        limit = self.timeout if timeout is None else timeout
        start = time.monotonic()
        deadline = None if limit is None else start + limit
        call_id: str | None = None
        duplicate = False
        tokens: list[int] = []
        texts: list[str] = []
        first_token_s: float | None = None
        span = _call_span(request, trace_context)
        outcome: CallResult | CallError | None = None
        abandoned = submitted = False
        try:
            headers = telemetry.inject(context=_context_of(span)) or None
            await self._nc.publish(
                self.subjects.submit, encode(request), reply=reply_to, headers=headers
            )
            submitted = True
            while True:
                wait = None if deadline is None else deadline - time.monotonic()
                if wait is not None and wait <= 0:
                    raise CallTimeout(
                        CallError(
                            call_id=call_id,
                            code=ErrorCode.timeout,
                            message=f"no final answer within {limit:.1f}s",
                            retryable=True,
                        )
                    )
                try:
                    msg = await get_within(pending.queue, wait)
                except TimeoutError:
                    continue
                if msg.headers and msg.headers.get("Status") == "503":
                    raise CallFailed(_unavailable(self.subjects.submit))
                reply = CALL_REPLY.validate_json(msg.data)
                if isinstance(reply, CallAccepted):
                    call_id, duplicate = reply.call_id, reply.duplicate
                elif isinstance(reply, TokenDelta):
                    end = reply.offset + len(reply.token_ids)
                    if end <= len(tokens):
                        continue  # a replay of tokens we already have
                    skip = max(0, len(tokens) - reply.offset)
                    if reply.offset > len(tokens):  # a gap should not happen; keep positions
                        tokens.extend([-1] * (reply.offset - len(tokens)))
                    new = reply.token_ids[skip:]
                    tokens.extend(new)
                    if first_token_s is None:
                        first_token_s = time.monotonic() - start
                    if skip:
                        reply = TokenDelta(
                            call_id=reply.call_id, offset=reply.offset + skip, token_ids=new
                        )
                    elif reply.text:
                        texts.append(reply.text)
                    yield reply
                elif isinstance(reply, CallFinal):
                    final_tokens = reply.token_ids if reply.token_ids is not None else tokens
                    outcome = CallResult(
                        call_id=reply.call_id,
                        program_id=reply.program_id,
                        thread_id=request.thread_id,
                        token_ids=list(final_tokens),
                        text=reply.text if reply.text is not None else ("".join(texts) or None),
                        finish_reason=reply.finish_reason,
                        usage=reply.usage,
                        timing=reply.timing,
                        engine=reply.engine,
                        preemptions=reply.preemptions,
                        level=reply.level,
                        duplicate=duplicate,
                        latency_s=time.monotonic() - start,
                        first_token_s=first_token_s,
                    )
                    yield outcome
                    return
                elif isinstance(reply, CallError):
                    raise CallFailed(reply)
        except CallFailed as exc:
            outcome = exc.error
            raise
        except (asyncio.CancelledError, GeneratorExit):  # the reader went away before the end
            abandoned = True
            raise
        finally:
            if abandoned and submitted and outcome is None:
                self._abandon(token, pending, call_id, request)
            else:
                self._pending.pop(token, None)
            _end_call_span(span, call_id, outcome)

    async def call(
        self,
        request: CallRequest,
        timeout: float | None = None,  # noqa: ASYNC109
        *,
        trace_context: Any = None,
    ) -> CallResult:
        """Make one call and wait for its result. It is sent with `stream=False`: nothing here
        reads token deltas, so the engine sends none and the final carries every token."""
        if request.stream:
            request = request.model_copy(update={"stream": False})
        result: CallResult | None = None
        async for item in self.submit(request, timeout, trace_context=trace_context):
            if isinstance(item, CallResult):
                result = item
        assert result is not None
        return result


def _call_span(request: CallRequest, parent: Any) -> Any:
    """The client side of one call (no-op without an OTel SDK in this process)."""
    from opentelemetry.trace import SpanKind

    return telemetry.start_span(
        "autellix.call",
        parent,
        kind=SpanKind.CLIENT,
        program_id=request.program_id,
        thread_id=request.thread_id,
        parents=len(request.parent_ids) or None,
        **{
            "gen_ai.operation.name": "chat" if request.messages is not None else "text_completion",
            "gen_ai.provider.name": "autellix",
            "gen_ai.conversation.id": request.program_id,
            "gen_ai.request.model": request.model,
            "gen_ai.request.max_tokens": request.sampling.max_tokens,
        },
    )


def _context_of(span: Any) -> Any:
    from opentelemetry import trace

    return trace.set_span_in_context(span)


def _end_call_span(span: Any, call_id: str | None, outcome: CallResult | CallError | None) -> None:
    if isinstance(outcome, CallResult):
        telemetry.set_attributes(
            span,
            call_id=outcome.call_id,
            engine_id=outcome.engine.engine_id,
            level=outcome.level,
            preemptions=outcome.preemptions,
            **{
                "gen_ai.response.id": outcome.call_id,
                "gen_ai.response.model": outcome.engine.model,
                "gen_ai.response.finish_reasons": [outcome.finish_reason],
                "gen_ai.usage.input_tokens": outcome.usage.prompt_tokens,
                "gen_ai.usage.output_tokens": outcome.usage.completion_tokens,
            },
        )
    else:
        telemetry.set_attributes(span, call_id=call_id)
        if isinstance(outcome, CallError):
            telemetry.record_error(span, outcome.code.value, outcome.message)
    span.end()


def _unavailable(subject: str) -> CallError:
    return CallError(
        code=ErrorCode.internal,
        message=f"no Autellix frontend is listening on {subject} (is the stack up?)",
        retryable=True,
    )


class _Caller:
    """What Program and Thread share: building requests and making calls."""

    client: Client
    program_id: str | None
    thread_id: str

    def _trace_context(self) -> Any:
        """The program span's context: every call of the program is a child of it."""
        return None

    def _request(
        self,
        prompt: str | None,
        messages: Sequence[ChatMessage | dict[str, Any]] | None,
        prompt_token_ids: Sequence[int] | None,
        max_tokens: int | None,
        temperature: float | None,
        sampling: SamplingParams | dict[str, Any] | None,
        parents: Sequence[str | CallResult] | None,
        client_call_id: str | None,
        metadata: dict[str, str] | None,
        thread: str | None,
    ) -> CallRequest:
        if self.program_id is None:
            raise RuntimeError("program is not open (use `async with client.program() as p`)")
        return CallRequest(
            program_id=self.program_id,
            thread_id=thread or self.thread_id,
            parent_ids=[p.call_id if isinstance(p, CallResult) else p for p in parents or ()],
            client_call_id=client_call_id,
            prompt=prompt,
            messages=[m if isinstance(m, ChatMessage) else ChatMessage(**m) for m in messages]
            if messages is not None
            else None,
            prompt_token_ids=list(prompt_token_ids) if prompt_token_ids is not None else None,
            sampling=_sampling(sampling, max_tokens, temperature=temperature),
            metadata=dict(metadata or {}),
        )

    async def call(
        self,
        prompt: str | None = None,
        *,
        messages: Sequence[ChatMessage | dict[str, Any]] | None = None,
        prompt_token_ids: Sequence[int] | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        sampling: SamplingParams | dict[str, Any] | None = None,
        parents: Sequence[str | CallResult] | None = None,
        client_call_id: str | None = None,
        metadata: dict[str, str] | None = None,
        thread: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> CallResult:
        """Make one LLM call and wait for its result."""
        req = self._request(
            prompt,
            messages,
            prompt_token_ids,
            max_tokens,
            temperature,
            sampling,
            parents,
            client_call_id,
            metadata,
            thread,
        )
        return await self.client.call(req, timeout, trace_context=self._trace_context())

    async def stream(
        self,
        prompt: str | None = None,
        *,
        messages: Sequence[ChatMessage | dict[str, Any]] | None = None,
        prompt_token_ids: Sequence[int] | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        sampling: SamplingParams | dict[str, Any] | None = None,
        parents: Sequence[str | CallResult] | None = None,
        client_call_id: str | None = None,
        metadata: dict[str, str] | None = None,
        thread: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> AsyncIterator[TokenDelta | CallResult]:
        """Make one LLM call; yield its token deltas as they come, then the `CallResult`."""
        req = self._request(
            prompt,
            messages,
            prompt_token_ids,
            max_tokens,
            temperature,
            sampling,
            parents,
            client_call_id,
            metadata,
            thread,
        )
        async for item in self.client.submit(req, timeout, trace_context=self._trace_context()):
            yield item


class Thread(_Caller):
    """Calls of one thread of a program (parallel branches use different threads)."""

    def __init__(self, program: Program, thread_id: str) -> None:
        self.program = program
        self.client = program.client
        self.thread_id = thread_id

    @property
    def program_id(self) -> str | None:  # type: ignore[override]
        return self.program.program_id

    def _trace_context(self) -> Any:
        return self.program._trace_context()


class Program(_Caller):
    """One agentic program (the paper's session). Open/close go through the frontend.

    Traced as one `autellix.program` span from open to close (when this process has an OTel
    SDK): every call is a child, and the services continue the same trace, so the whole program
    is one trace. Without an SDK the services still put it in one trace, derived from the
    program id (see `autellix.telemetry`)."""

    def __init__(self, client: Client, program_id: str | None, metadata: dict[str, str]) -> None:
        self.client = client
        self.program_id = program_id
        self.metadata = metadata
        self.thread_id = "main"
        self.closed: ProgramReply | None = None
        self._span: Any = None

    def _trace_context(self) -> Any:
        return _context_of(self._span) if self._span is not None else None

    async def open(self) -> ProgramReply:
        if self._span is None:
            self._span = telemetry.start_span("autellix.program", None, program_id=self.program_id)
        try:
            reply = await self.client._program_request(
                self.client.subjects.program_open,
                ProgramOpen(program_id=self.program_id, metadata=self.metadata),
                self._trace_context(),
            )
        except CallFailed as exc:
            self._end_span(exc.error)
            raise
        if reply.status != "open":
            error = CallError(
                code=ErrorCode.program_closed, message=f"program {reply.program_id} is closed"
            )
            self._end_span(error)
            raise CallFailed(error)
        self.program_id = reply.program_id
        telemetry.set_attributes(
            self._span, program_id=reply.program_id, **{"gen_ai.conversation.id": reply.program_id}
        )
        return reply

    async def close(self) -> ProgramReply:
        assert self.program_id is not None
        try:
            self.closed = await self.client._program_request(
                self.client.subjects.program_close,
                ProgramClose(program_id=self.program_id),
                self._trace_context(),
            )
        except CallFailed as exc:
            self._end_span(exc.error)
            raise
        stats = self.closed.stats
        if stats is not None and self._span is not None:
            telemetry.set_attributes(
                self._span,
                calls=stats.calls,
                service=stats.service,
                waiting_s=stats.waiting_s,
                **{
                    "gen_ai.usage.input_tokens": stats.prompt_tokens,
                    "gen_ai.usage.output_tokens": stats.completion_tokens,
                },
            )
        self._end_span(None)
        return self.closed

    def _end_span(self, error: CallError | None) -> None:
        if self._span is None:
            return
        if error is not None:
            telemetry.record_error(self._span, error.code.value, error.message)
        self._span.end()
        self._span = None

    def thread(self, name: str) -> Thread:
        return Thread(self, name)

    async def __aenter__(self) -> Program:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if exc[1] is not None and self._span is not None:
            telemetry.record_error(self._span, type(exc[1]).__name__, str(exc[1]))
        if self.program_id is not None:
            try:
                await self.close()
            except CallFailed:
                if exc[0] is None:
                    raise
