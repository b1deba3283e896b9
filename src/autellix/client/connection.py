"""`Client`: one NATS connection that carries any number of programs and concurrent calls.

How a call travels: the client publishes a `CallRequest` to `Subjects.submit` with a reply
subject under its own inbox prefix (one wildcard subscription serves every call of the client),
then reads `CallAccepted`, `TokenDelta`s and one `CallFinal` (or a `CallError`) from it
(`autellix.client.streaming` folds them into what the caller sees).

A lost message costs no answer (`autellix.client.recovery`): a request nobody accepted within
`accept_timeout`, or refused as `unavailable` (the frontend's Postgres restarting), is resent
under its client call id (so it never runs twice), then given up with an explicit error; an
accepted call whose replies stopped (the NATS connection reconnected, a gap in the deltas,
`silence_timeout` without a message) is resumed from Postgres by a `CallResume`, which returns
the tokens from where the stream stopped and, once ended, its answer: every token exactly
once, and one final.

A call whose reader goes away (its task cancelled, its stream closed early) is cancelled in the
background, so the cancelled task never waits for a round trip; `close()` lets those cancels go
out before the connection does.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from autellix.client.errors import CallFailed, CallTimeout, unavailable
from autellix.client.program import Program
from autellix.client.recovery import (
    CallTimers,
    fold_resume,
    not_accepted,
    resume_request,
    with_client_call_id,
)
from autellix.client.results import CallResult
from autellix.client.streaming import CallStream
from autellix.client.tracing import call_span, context_of, end_call_span
from autellix.runtime import telemetry
from autellix.runtime.nats_auth import ENV_NATS_USER_FILE, connect_options
from autellix.runtime.nats_connect import connect_refusing_bad_credentials
from autellix.transport.aio import get_within
from autellix.wire.protocol import (
    CALL_REPLY,
    CallAccepted,
    CallCancel,
    CallCancelReply,
    CallError,
    CallFinal,
    CallRequest,
    CallResumeReply,
    ErrorCode,
    ProgramCancel,
    ProgramCancelReply,
    ProgramReply,
    Subjects,
    TokenDelta,
    encode,
)

__all__ = ["DEFAULT_NATS_URL", "Client"]

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"


def _default_server(given: str | None) -> tuple[str, str | None, str | None]:
    """The NATS URL to use and the namespace and client user file that come with it: ``given``,
    else ``AUTELLIX_NATS_URL``, else the running `autellix up` stack (its ``stack.json``: its URL,
    namespace and ``credentials.nats_user_file``), else ``DEFAULT_NATS_URL``."""
    url = given or os.environ.get("AUTELLIX_NATS_URL")
    if url:
        return url, None, None
    from autellix.local.stack_file import discover

    info = discover()
    if info is not None:
        return info.nats_url, info.namespace, info.credentials.get("nats_user_file")
    return DEFAULT_NATS_URL, None, None


#: the longest wait for one try of a request that is safe to repeat (`_idempotent_request`)
IDEMPOTENT_TRY_S = 2.0

#: put on every open call's queue when the NATS connection is back: replies may have been lost
RECONNECTED = object()


@dataclass
class _Pending:
    """The replies to one call, routed here by the token that ends their inbox subject."""

    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)


class Client:
    """One NATS connection, any number of programs and concurrent calls."""

    def __init__(
        self,
        nats_url: str | None = None,
        *,
        namespace: str | None = None,
        timeout: float | None = 300.0,
        request_timeout: float = 10.0,
        accept_timeout: float = 5.0,
        silence_timeout: float = 5.0,
        connect_timeout: float | None = 30.0,
        nc: Any = None,
        user_file: str | None = None,
    ) -> None:
        """`timeout`: a call's whole life, submit to final. `accept_timeout`: how long a call is
        resent (idempotently) until a frontend accepts it, before an explicit error.
        `silence_timeout`: an accepted call with no message for this long is resumed from
        Postgres. `request_timeout`: one program/cancel request. `connect_timeout`: how long
        `connect` waits for a NATS server (None: forever); credentials the server refuses raise
        `NatsConnectError` at once, never a retry loop. `nc`: an existing nats-py
        connection to share (then only the silence timeout notices its reconnects).
        `user_file`: NATS credentials (`autellix.runtime.nats_auth`; default
        ``$AUTELLIX_NATS_USER_FILE``, else the discovered stack's client user)."""
        url, found_namespace, found_user_file = _default_server(nats_url)
        self.nats_url = url
        self.user_file = user_file or os.environ.get(ENV_NATS_USER_FILE) or found_user_file
        self.subjects = Subjects(
            namespace or os.environ.get("AUTELLIX_NAMESPACE") or found_namespace or "autellix"
        )
        self.timeout = timeout
        self.request_timeout = request_timeout
        self.accept_timeout = accept_timeout
        self.silence_timeout = silence_timeout
        self.connect_timeout = connect_timeout
        #: recoveries attempted: calls resent before acceptance, resume requests sent
        self.recovered: dict[str, int] = {"resent": 0, "resumed": 0}
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

            self._nc = await connect_refusing_bad_credentials(
                nats.connect,
                [u.strip() for u in self.nats_url.split(",")],
                within_s=self.connect_timeout,
                name="autellix-client",
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.25,
                reconnected_cb=self._on_reconnected,
                **connect_options(user_file=self.user_file),
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

    async def _on_reconnected(self) -> None:
        """Replies published while the connection was down are gone: every open call resumes."""
        for pending in list(self._pending.values()):
            pending.queue.put_nowait(RECONNECTED)

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
        self,
        subject: str,
        body: Any,
        *,
        call_id: str | None = None,
        trace_context: Any = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the request's own limit
    ) -> bytes:
        """One core NATS request to the frontend; no frontend or no answer raise as call errors."""
        from nats.errors import NoRespondersError
        from nats.errors import TimeoutError as NatsTimeout

        try:
            msg = await self._nc.request(
                subject,
                encode(body),
                timeout=self.request_timeout if timeout is None else timeout,
                headers=telemetry.inject(context=trace_context) or None,
            )
        except NoRespondersError as exc:
            raise CallFailed(unavailable(subject)) from exc
        except NatsTimeout as exc:
            message = f"no answer on {subject}"
            raise CallTimeout(
                CallError(call_id=call_id, code=ErrorCode.timeout, message=message, retryable=True)
            ) from exc
        return bytes(msg.data)

    async def _idempotent_request(
        self, subject: str, body: Any, *, call_id: str | None = None, trace_context: Any = None
    ) -> bytes:
        """`_roundtrip` for a request that is safe to repeat (program open/close/cancel, call
        cancel): no frontend (restarting, or NATS reconnecting) is retried for up to
        `accept_timeout`, no answer for up to `request_timeout`, before the error goes to the
        caller. Each try waits at most `IDEMPOTENT_TRY_S` for its answer: a request the
        frontend took and then died with is never answered, and waiting the whole
        `request_timeout` for it made a frontend restart cost 10 s (`autellix chaos`)."""
        start = time.monotonic()
        try_s = min(self.request_timeout, IDEMPOTENT_TRY_S)
        delay = 0.25
        while True:
            try:
                return await self._roundtrip(
                    subject, body, call_id=call_id, trace_context=trace_context, timeout=try_s
                )
            except CallFailed as exc:
                limit = (
                    self.request_timeout if isinstance(exc, CallTimeout) else self.accept_timeout
                )
                if not exc.retryable or time.monotonic() + delay > start + limit:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _program_request(
        self, subject: str, body: Any, trace_context: Any = None
    ) -> ProgramReply:
        data = await self._idempotent_request(subject, body, trace_context=trace_context)
        reply = CALL_REPLY.validate_json(data)
        if isinstance(reply, CallError):
            raise CallFailed(reply)
        if not isinstance(reply, ProgramReply):
            raise CallFailed(
                CallError(code=ErrorCode.internal, message=f"unexpected reply {reply.type}")
            )
        return reply

    async def cancel_program(
        self, program_id: str, *, reason: str = "", close: bool = False
    ) -> ProgramCancelReply:
        """Cancel every unfinished call of a program, queued or running on any engine: each
        caller gets `CallError(cancelled)`, each engine frees the call's slot. `close` closes
        the program first, so no new call slips in. Safe to repeat."""
        if self._nc is None:
            raise RuntimeError("client is not connected (use `async with Client(...)`)")
        body = ProgramCancel(program_id=program_id, reason=reason, close=close)
        obj = json.loads(await self._idempotent_request(self.subjects.program_cancel, body))
        if obj.get("type") == "error":
            raise CallFailed(CallError.model_validate(obj))
        return ProgramCancelReply.model_validate(obj)

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
        obj = json.loads(
            await self._idempotent_request(self.subjects.cancel, body, call_id=call_id)
        )
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
            if call_id is None:  # submitted, but no id seen yet: wait for the acceptance
                # (a cancel by client call id could overtake the submit at the frontend, find
                # nothing to cancel and leave the call running)
                call_id = await self._accepted_id(pending)
                if call_id is None and request.client_call_id is None:
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
            if msg is RECONNECTED:
                continue
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

        Lost messages are recovered (`autellix.client.recovery`): resent until accepted,
        resumed from Postgres after a reconnect, a gap or a silence. Traced as an
        `autellix.call` client span, a child of `trace_context` (a program's span context) or
        of the current span; its W3C context travels with the request."""
        if self._nc is None:
            raise RuntimeError("client is not connected (use `async with Client(...)`)")
        request, own_key = with_client_call_id(request)
        token = f"{next(self._ids):x}"
        pending = _Pending()
        self._pending[token] = pending
        reply_to = f"{self._prefix}.{token}"
        limit = self.timeout if timeout is None else timeout
        start = time.monotonic()
        deadline = None if limit is None else start + limit
        stream = CallStream(request, start, own_key=own_key)
        timers = CallTimers.start(start, self.accept_timeout, self.silence_timeout)
        span = call_span(request, trace_context)
        outcome: CallResult | CallError | None = None
        abandoned = submitted = False
        bounced = False  # the last answer was "no responders": no frontend is up
        headers = telemetry.inject(context=context_of(span)) or None

        async def send() -> None:
            await self._nc.publish(
                self.subjects.submit, encode(request), reply=reply_to, headers=headers
            )
            timers.sent(time.monotonic())

        try:
            await send()
            submitted = True
            while True:
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    raise CallTimeout(
                        CallError(
                            call_id=stream.call_id,
                            code=ErrorCode.timeout,
                            message=f"no final answer within {limit:.1f}s",
                            retryable=True,
                        )
                    )
                wait = timers.next_at - now
                if deadline is not None:
                    wait = min(wait, deadline - now)
                try:
                    msg = await get_within(pending.queue, max(wait, 0.0))
                except TimeoutError:
                    if time.monotonic() < timers.next_at:
                        continue  # the deadline: checked above
                    msg = RECONNECTED  # due: recover as after a reconnect
                if msg is RECONNECTED:
                    if not stream.accepted_yet:
                        if time.monotonic() >= timers.accept_by:
                            raise CallFailed(
                                unavailable(self.subjects.submit)
                                if bounced
                                else not_accepted(stream, self.accept_timeout)
                            )
                        await send()
                        self.recovered["resent"] += 1
                        continue
                    ended = None
                    async for item in self._resume(stream, timers):
                        ended = item
                        yield item
                    if ended is not None and not isinstance(ended, TokenDelta):
                        outcome = ended
                        return
                    continue
                if msg.headers and msg.headers.get("Status") == "503":
                    if stream.accepted_yet:
                        continue  # a stray bounce of a resend: the call is in already
                    now, bounced = time.monotonic(), True
                    if now >= timers.accept_by:
                        raise CallFailed(unavailable(self.subjects.submit))
                    timers.retry_soon(now)
                    timers.next_at = min(timers.next_at, timers.accept_by)
                    continue
                reply, bounced = CALL_REPLY.validate_json(msg.data), False
                if stream.accepted_yet or isinstance(reply, CallAccepted):
                    timers.heard(time.monotonic())
                if isinstance(reply, CallAccepted):
                    stream.accepted(reply)
                elif isinstance(reply, TokenDelta):
                    for new in stream.deltas(reply):
                        yield new
                    if stream.gap:
                        timers.now_due(time.monotonic())
                elif isinstance(reply, CallFinal):
                    for new in stream.tail(reply):
                        yield new
                    if stream.missing(reply):  # deltas were lost: Postgres has them
                        async for item in self._complete(stream, reply, deadline):
                            yield item
                    outcome = stream.result(reply)
                    yield outcome
                    return
                elif isinstance(reply, CallError):
                    now = time.monotonic()
                    if (
                        not stream.accepted_yet
                        and reply.code == ErrorCode.unavailable
                        and now + timers.retry_s < timers.accept_by
                    ):  # the frontend's Postgres is restarting: resend, as after a bounce
                        timers.retry_soon(now)
                        continue
                    raise CallFailed(reply)
        except CallFailed as exc:
            outcome = exc.error
            raise
        except (asyncio.CancelledError, GeneratorExit):  # the reader went away before the end
            abandoned = True
            raise
        finally:
            if abandoned and submitted and outcome is None:
                self._abandon(token, pending, stream.call_id, request)
            else:
                self._pending.pop(token, None)
            end_call_span(span, stream.call_id, outcome)

    async def _ask_resume(self, stream: CallStream) -> CallResumeReply | None:
        """One `CallResume` round trip; None when nobody answered (no frontend right now)."""
        wait = min(self.request_timeout, 2.0)
        self.recovered["resumed"] += 1
        try:
            data = await self._roundtrip(
                self.subjects.resume, resume_request(stream), call_id=stream.call_id, timeout=wait
            )
        except CallFailed:
            return None
        except Exception:  # the connection is down or closing: the next try may find it back
            return None
        obj = json.loads(data)
        if obj.get("type") == "error":
            raise CallFailed(CallError.model_validate(obj))
        return CallResumeReply.model_validate(obj)

    async def _resume(
        self, stream: CallStream, timers: CallTimers
    ) -> AsyncIterator[TokenDelta | CallResult]:
        """Resume an accepted call: yield the tokens it missed and, if the call has ended, its
        result last (an error raises). Nothing answered: tried again shortly."""
        reply = await self._ask_resume(stream)
        now = time.monotonic()
        if reply is None:
            timers.retry_soon(now)
            return
        timers.heard(now)
        new, ended = fold_resume(stream, reply)
        for delta in new:
            yield delta
        if isinstance(ended, CallError):
            raise CallFailed(ended)
        if isinstance(ended, CallFinal):
            yield stream.result(ended)
        elif stream.gap:  # still running, its saved tokens not yet up to the held deltas
            timers.retry_soon(now)

    async def _complete(
        self, stream: CallStream, final: CallFinal, deadline: float | None
    ) -> AsyncIterator[TokenDelta]:
        """A final arrived but deltas before it were lost: read the rest from Postgres (the
        engine stored every token before it sent the final)."""
        give_up = (time.monotonic() + 30.0) if deadline is None else deadline
        delay = 0.25
        while stream.missing(final):
            reply = await self._ask_resume(stream)
            if reply is not None:
                new, _ = fold_resume(stream, reply)
                for delta in new:
                    yield delta
                if not new and reply.final is None:
                    break  # nothing more stored (cannot happen for an ended call)
                continue
            if time.monotonic() + delay > give_up:
                raise CallFailed(
                    CallError(
                        call_id=stream.call_id,
                        code=ErrorCode.internal,
                        message="the call ended but some of its streamed tokens were lost and "
                        "no frontend answered a resume for them",
                        retryable=True,
                    )
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

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
