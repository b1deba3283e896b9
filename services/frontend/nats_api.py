"""The frontend's NATS API: the NATS face of `accept.py` (and `cancel.py`).

Core NATS subscriptions in the queue group `frontend` (N replicas share the load, each request
goes to one): `Subjects.submit` (CallRequest → CallAccepted | CallError on the request's reply
subject), `Subjects.program_open` / `program_close` (→ ProgramReply | CallError) and
`Subjects.cancel` (CallCancel → CallCancelReply | CallError; see `cancel.py`) and
`Subjects.program_cancel` (ProgramCancel → ProgramCancelReply | CallError: every unfinished call
of a program, also what `ProgramClose(cancel=true)` does after closing) and `Subjects.resume`
(CallResume → CallResumeReply | CallError: a call's stored tokens and outcome, `resume.py`).

Bad input never crashes anything: it is answered with a typed `CallError` (invalid_json,
validation_error, unsupported_version, message_too_large, ...) and logged as one warning line.
The size limit is the NATS server's own max_payload (from its INFO), read at connect: a request
is refused if it, or any message its call would need (`protocol.delivery_size`), exceeds it.
Past the bound on unfinished calls (`admission.py`) a call is refused with `overloaded`; a call
naming a `model` no live engine serves, with `model_not_found` (`live_engines.py`: the engines'
heartbeats this frontend hears, the same view its HTTP API answers from).
Each request is handled in its own task (at most `concurrency` at once) because nats-py runs a
subscription's callbacks one after another.

The engine streams deltas and the final straight to the caller's reply subject (stored with the
call), so the frontend is not on the token path and a frontend restart never cuts a stream.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, TypeVar

from pydantic import BaseModel

from autellix.runtime import telemetry
from autellix.runtime.settings import Settings
from autellix.services.frontend.accept import (
    FrontendContext,
    accept_call,
    open_program,
)
from autellix.services.frontend.admission import (
    DEFAULT_MAX_UNFINISHED_CALLS,
    DEFAULT_MAX_UNFINISHED_CALLS_PER_TENANT,
    Admission,
)
from autellix.services.frontend.cancel import (
    cancel_call,
    cancel_program,
    close_program_cancelling,
)
from autellix.services.frontend.live_engines import EngineDirectory
from autellix.services.frontend.resume import resume_call
from autellix.services.frontend.tracing import record_program_closed
from autellix.store.db import create_pool, db_unavailable, synchronous_commit_for
from autellix.transport import bus, direct
from autellix.transport.publisher import AsyncPublisher
from autellix.wire.protocol import (
    MAX_MESSAGE_BYTES,
    CallCancel,
    CallError,
    CallResume,
    ErrorCode,
    ProgramCancel,
    ProgramClose,
    ProgramOpen,
    Subjects,
    encode,
    parse_call_request,
    parse_request,
)

M = TypeVar("M", bound=BaseModel)
QUEUE_GROUP = "frontend"


def parse_message(model: type[M], data: bytes, limit: int = MAX_MESSAGE_BYTES) -> M | CallError:
    """`parse_call_request`'s checks for any request model (program open/close, cancel)."""
    return parse_request(model, data, limit)


class FrontendService:
    name = "frontend"

    def __init__(
        self,
        settings: Settings,
        log: Any,
        concurrency: int = 256,
        max_unfinished_calls: int = DEFAULT_MAX_UNFINISHED_CALLS,
        max_unfinished_calls_per_tenant: int = DEFAULT_MAX_UNFINISHED_CALLS_PER_TENANT,
    ) -> None:
        self.settings = settings
        self.max_unfinished_calls = max_unfinished_calls
        self.max_unfinished_calls_per_tenant = max_unfinished_calls_per_tenant
        self.log = log
        self.subjects = Subjects(settings.namespace)
        self._sem = asyncio.Semaphore(concurrency)
        self._inflight: set[asyncio.Task[None]] = set()
        self._subs: list[Any] = []
        self.nc: Any = None
        self.ctx: FrontendContext | None = None
        self.accepted = 0
        self.rejected = 0

    def ready_fields(self) -> dict[str, Any]:
        return {
            "submit": self.subjects.submit,
            "direct_hops": direct.enabled(),
            "max_payload": self.nc.max_payload if self.nc is not None else None,
            "max_unfinished_calls": self.max_unfinished_calls,
            "max_unfinished_calls_per_tenant": self.max_unfinished_calls_per_tenant,
        }

    async def start(self) -> None:
        assert self.settings.nats_url and self.settings.database_url
        self.nc = await bus.connect(self.settings.nats_url, name="autellix-frontend", log=self.log)
        js = self.nc.jetstream()
        await bus.ensure_streams(js, self.subjects)
        pool = await create_pool(
            self.settings.database_url,
            max_size=16,
            application_name="autellix-frontend",
            synchronous_commit=synchronous_commit_for("frontend"),
            # key lookups only: the accept statement was re-planned on every call (0.35 ->
            # 0.31 ms a call with the generic plan, bench/overhead/README.md "Session 6")
            generic_plans=True,
        )
        publisher = AsyncPublisher(self.nc, attempts=3)
        await publisher.start()
        engines = EngineDirectory(self.nc, self.subjects)
        await engines.start(pool)
        self.ctx = FrontendContext(
            pool=pool,
            js=js,
            subjects=self.subjects,
            log=self.log,
            publisher=publisher,
            direct=direct.enabled(),
            direct_timeout_s=direct.timeout_s(self.log),
            max_payload=self.nc.max_payload,
            admission=Admission(
                pool,
                limit=self.max_unfinished_calls,
                tenant_limit=self.max_unfinished_calls_per_tenant,
            ),
            engines=engines,
        )
        for subject, handler in (
            (self.subjects.submit, self._on_submit),
            (self.subjects.program_open, self._on_open),
            (self.subjects.program_close, self._on_close),
            (self.subjects.cancel, self._on_cancel),
            (self.subjects.program_cancel, self._on_program_cancel),
            (self.subjects.resume, self._on_resume),
        ):
            self._subs.append(
                await self.nc.subscribe(subject, queue=QUEUE_GROUP, cb=self._spawner(handler))
            )

    def _spawner(self, handler: Any) -> Any:
        async def cb(msg: Any) -> None:
            await self._sem.acquire()  # backpressure: the subscription's queue fills up
            task = asyncio.create_task(self._guard(handler, msg))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

        return cb

    async def _guard(self, handler: Any, msg: Any) -> None:
        try:
            await handler(msg)
        except Exception as exc:
            if db_unavailable(exc):  # Postgres restarting: an outage, not a bug
                self.log.warning(
                    "request failed: database unavailable", subject=msg.subject, error=repr(exc)
                )
                err = CallError(
                    code=ErrorCode.unavailable,
                    message=f"database unavailable, retry: {exc!r}",
                    retryable=True,
                )
            else:
                self.log.exception("request failed", subject=msg.subject, error=repr(exc))
                err = CallError(
                    code=ErrorCode.internal, message=f"frontend error: {exc!r}", retryable=True
                )
            if msg.reply:
                with contextlib.suppress(Exception):
                    await self.nc.publish(msg.reply, encode(err))
        finally:
            self._sem.release()

    async def _reject(self, msg: Any, err: CallError, what: str) -> None:
        self.rejected += 1
        self.log.warning(
            f"rejected {what}",
            code=err.code.value,
            detail=err.message[:300],
            bytes=len(msg.data),
            reply=msg.reply,
        )
        if msg.reply:
            await self.nc.publish(msg.reply, encode(err))

    async def _on_submit(self, msg: Any) -> None:
        assert self.ctx is not None
        if not msg.reply:
            self.log.warning("call without a reply subject dropped", bytes=len(msg.data))
            return
        parsed = parse_call_request(msg.data, self.nc.max_payload)
        if isinstance(parsed, CallError):
            await self._reject(msg, parsed, "call request")
            return
        reply_to = msg.reply

        async def send(reply: Any) -> None:
            if isinstance(reply, CallError) and reply.call_id is None:
                await self._reject(msg, reply, "call")
            else:
                await self.nc.publish(reply_to, encode(reply))

        with telemetry.span("autellix.accept", msg.headers, program_id=parsed.program_id):
            outcome = await accept_call(self.ctx, parsed, reply_to, send, telemetry.inject())
        if not isinstance(outcome.first, CallError):
            self.accepted += 1

    async def _on_open(self, msg: Any) -> None:
        assert self.ctx is not None
        parsed = parse_message(ProgramOpen, msg.data, self.nc.max_payload)
        if isinstance(parsed, CallError):
            await self._reject(msg, parsed, "program open")
            return
        reply = await open_program(self.ctx, parsed)
        if msg.reply:
            await self.nc.publish(msg.reply, encode(reply))

    async def _on_close(self, msg: Any) -> None:
        assert self.ctx is not None
        parsed = parse_message(ProgramClose, msg.data, self.nc.max_payload)
        if isinstance(parsed, CallError):
            await self._reject(msg, parsed, "program close")
            return
        reply = await close_program_cancelling(self.ctx, self.nc, parsed)
        if msg.reply:
            await self.nc.publish(msg.reply, encode(reply))
        await record_program_closed(self.ctx.pool, reply, msg.headers, self.log)  # trace root

    async def _on_cancel(self, msg: Any) -> None:
        """CallCancel; without a reply subject it is still applied (fire-and-forget cancels
        from a client whose task is being torn down)."""
        assert self.ctx is not None
        parsed = parse_message(CallCancel, msg.data, self.nc.max_payload)
        if isinstance(parsed, CallError):
            await self._reject(msg, parsed, "call cancel")
            return
        reply = await cancel_call(self.ctx, self.nc, parsed)
        if msg.reply:
            await self.nc.publish(msg.reply, encode(reply))

    async def _on_program_cancel(self, msg: Any) -> None:
        """ProgramCancel; applied without a reply subject too, as a CallCancel."""
        assert self.ctx is not None
        parsed = parse_message(ProgramCancel, msg.data, self.nc.max_payload)
        if isinstance(parsed, CallError):
            await self._reject(msg, parsed, "program cancel")
            return
        reply = await cancel_program(self.ctx, self.nc, parsed)
        if msg.reply:
            await self.nc.publish(msg.reply, encode(reply))

    async def _on_resume(self, msg: Any) -> None:
        """CallResume: read-only, so a request without a reply subject is simply dropped."""
        assert self.ctx is not None
        if not msg.reply:
            return
        parsed = parse_message(CallResume, msg.data, self.nc.max_payload)
        if isinstance(parsed, CallError):
            await self._reject(msg, parsed, "call resume")
            return
        await self.nc.publish(msg.reply, encode(await resume_call(self.ctx, parsed)))

    async def stop(self) -> None:
        for sub in self._subs:  # stop taking requests; queue-group peers take over
            with contextlib.suppress(Exception):
                await sub.drain()
        if self._inflight:
            await asyncio.wait(list(self._inflight), timeout=15.0)
        with contextlib.suppress(Exception):
            await self.nc.drain()
        if self.ctx is not None:
            if self.ctx.engines is not None:
                await self.ctx.engines.stop()
            await self.ctx.pool.close()
        self.log.info(
            "frontend totals",
            accepted=self.accepted,
            rejected=self.rejected,
            direct_offers=dict(self.ctx.publisher.offers)
            if self.ctx and self.ctx.publisher
            else {},
        )


async def build(
    settings: Settings,
    log: Any,
    concurrency: int = 256,
    max_unfinished_calls: int = DEFAULT_MAX_UNFINISHED_CALLS,
    max_unfinished_calls_per_tenant: int = DEFAULT_MAX_UNFINISHED_CALLS_PER_TENANT,
) -> FrontendService:
    return FrontendService(
        settings, log, concurrency, max_unfinished_calls, max_unfinished_calls_per_tenant
    )
