"""Programs and threads: the handles a caller makes calls through.

A `Program` is the paper's session: opened and closed through the frontend, so the scheduler can
rank its calls by the service the whole program has had. `Thread`s are its parallel branches;
`parents` links a call to the calls whose results it used. Both only build `CallRequest`s and
hand them to the `Client`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from autellix.client.errors import CallFailed
from autellix.client.results import CallResult
from autellix.client.tracing import context_of
from autellix.runtime import telemetry
from autellix.wire.protocol import (
    CallError,
    CallRequest,
    ChatMessage,
    ErrorCode,
    ProgramCancelReply,
    ProgramClose,
    ProgramOpen,
    ProgramReply,
    SamplingParams,
    TokenDelta,
)

if TYPE_CHECKING:
    from autellix.client.connection import Client

__all__ = ["Program", "Thread"]


def _sampling(
    sampling: SamplingParams | dict[str, Any] | None, max_tokens: int | None, **extra: Any
) -> SamplingParams:
    """`sampling` (a model or a dict) with `max_tokens` and the other keywords given on top."""
    base: dict[str, Any] = {}
    if isinstance(sampling, SamplingParams):
        base = sampling.model_dump()
    elif sampling:
        base = dict(sampling)
    if max_tokens is not None:
        base["max_tokens"] = max_tokens
    base.update({k: v for k, v in extra.items() if v is not None})
    return SamplingParams(**base)


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
        model: str | None = None,
        logprobs: int | None = None,
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
            sampling=_sampling(sampling, max_tokens, temperature=temperature, logprobs=logprobs),
            metadata=dict(metadata or {}),
            model=model,
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
        model: str | None = None,
        logprobs: int | None = None,
    ) -> CallResult:
        """Make one LLM call and wait for its result. `model`: the served model name to run on
        (None: any engine); `logprobs`: per-token log-probabilities plus this many candidates
        per position in `CallResult.logprobs` (engines with a real model only)."""
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
            model,
            logprobs,
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
        model: str | None = None,
        logprobs: int | None = None,
    ) -> AsyncIterator[TokenDelta | CallResult]:
        """Make one LLM call; yield its token deltas as they come, then the `CallResult`
        (`model`, `logprobs`: as for `call`; each delta carries its tokens' logprobs)."""
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
            model,
            logprobs,
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
    program id (see `autellix.runtime.telemetry`)."""

    def __init__(self, client: Client, program_id: str | None, metadata: dict[str, str]) -> None:
        self.client = client
        self.program_id = program_id
        self.metadata = metadata
        self.thread_id = "main"
        self.closed: ProgramReply | None = None
        self._span: Any = None

    def _trace_context(self) -> Any:
        return context_of(self._span) if self._span is not None else None

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

    async def cancel(self, reason: str = "", *, close: bool = False) -> ProgramCancelReply:
        """Cancel every unfinished call of this program (on every engine); each is answered
        `cancelled`. The program stays open for new calls unless `close`."""
        assert self.program_id is not None
        return await self.client.cancel_program(self.program_id, reason=reason, close=close)

    async def close(self, *, cancel: bool = False) -> ProgramReply:
        """Close the program; with `cancel`, its unfinished calls are cancelled too (without,
        they run to their end)."""
        assert self.program_id is not None
        try:
            self.closed = await self.client._program_request(
                self.client.subjects.program_close,
                ProgramClose(program_id=self.program_id, cancel=cancel),
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
