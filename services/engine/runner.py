"""The engine's scheduler-of-record for its own calls: admission, preemption, streaming, finishing.

One `EngineRunner` per engine process. Calls arrive as `Dispatch` messages (`offer`), wait in
`LevelQueues`, and are admitted while fewer than `backend.max_batch` run, highest level first.
Each admitted call runs one *segment* (a backend generation) in its own task:

1. `mark_running` (conditional: this engine, this attempt) — not owned → drop silently. It is
   written in batches off the critical path (`_start_writer`, every `start_batch_s`) while the
   generation already runs; no token is streamed before it confirmed the call is ours;
2. generate; tokens go to the caller as `TokenDelta`s, batched to at most one message per
   `delta_interval_s` or `delta_max_tokens` per call, each with the `offset` of its first token;
3. on finish: `finish_call` (conditional; it also records the start of a call that ended before
   its start was written) → `CallFinal` to the reply subject the row returns.
   If the update matches nothing (the call was re-dispatched elsewhere meanwhile), nothing is
   sent: a call is answered once, by the owner of its latest attempt.

Stopping a segment early (`stop_reason`) cancels the backend stream (which frees the batch
slot) and then: `preempt` → `mark_preempted` and back to the front of its level queue, resumed
later as a continuation (prompt + tokens so far, remaining max_tokens); `cancel` → CallError
`cancelled`; `lost` (ownership check failed) → drop; `shutdown` → save progress and hand the call
back to the schedulers (queued, attempt kept) so another engine resumes it.

Admission and local preemption are the policy core's `plan_batch` (the rule the simulator
uses): walk waiting calls in rank order `(level, tiebreak, seq)`, admit while a slot is free,
stop at the first that does not fit; a waiting call may preempt the lowest-ranked running call
of a *strictly* lower level (ties keep the running call) that has decoded at least the policy's
`min_run_tokens` in its current run, at most `max_inflight_preemptions` at a time (the "one per
engine step" cap: a preemption is in flight until the backend has released the slot). The
levels themselves are the schedulers' decisions (Dispatch.level, then `Control(set_level)` for
demotions and promotions); the engine only orders and preempts by them. `Control` messages
(`control`) also let the schedulers preempt or cancel calls explicitly; each is applied once
(per-call `seq`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from autellix import bus
from autellix.policy import Candidate, plan_batch
from autellix.protocol import (
    CallError,
    CallFinal,
    CallProgress,
    CallRequest,
    Control,
    Dispatch,
    EngineInfo,
    ErrorCode,
    ServiceReport,
    Subjects,
    Timing,
    TokenDelta,
    Usage,
    encode,
)
from autellix.services.engine.backends.base import Backend, BackendError, GenerationRequest
from autellix.services.engine.local import EngineCall, LevelQueues
from autellix.services.engine.textout import OutputText
from autellix.services.engine.tracing import EngineTelemetry
from autellix.store import queries as q

_RETRYABLE = {ErrorCode.engine_failed.value, ErrorCode.internal.value, ErrorCode.no_engine.value}


def _otel_installed() -> bool:
    """Whether `telemetry.setup_tracing` installed an SDK tracer or meter provider (the API's
    defaults are proxies until then)."""
    from opentelemetry import metrics, trace

    no_traces = isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    no_metrics = type(metrics.get_meter_provider()).__name__ == "_ProxyMeterProvider"
    return not (no_traces and no_metrics)


class _NoTelemetry:
    """`EngineTelemetry`'s hooks, doing nothing (no OpenTelemetry SDK in this process)."""

    def offered(self, call: Any) -> None:
        pass

    @contextlib.contextmanager
    def segment(self, call: Any) -> Any:
        yield None

    def preempted(self, call: Any, reason: str | None, level: int) -> None:
        pass

    def streamed(self, n: int) -> None:
        pass

    def finished(self, call: Any, final: Any) -> None:
        pass

    def failed(self, call: Any, code: str, message: str) -> None:
        pass

    def done(self, call: Any) -> None:
        pass


@dataclass
class RunnerConfig:
    delta_interval_s: float = 0.02
    delta_max_tokens: int = 64
    preemption: bool = True
    max_inflight_preemptions: int = 1
    final_token_ids: bool = True
    # seconds the engine gathers call starts before writing them in one statement (None: one
    # `mark_running` round trip before each generation, the old behaviour)
    start_batch_s: float | None = 0.002


class EngineRunner:
    def __init__(
        self,
        *,
        backend: Backend,
        pool: Any,
        nc: NATS,
        js: JetStreamContext,
        subjects: Subjects,
        engine_id: str,
        log: Any,
        config: RunnerConfig | None = None,
    ) -> None:
        self.backend = backend
        self.pool = pool
        self.nc = nc
        self.js = js
        self.subjects = subjects
        self.engine_id = engine_id
        self.log = log
        self.cfg = config or RunnerConfig()
        self.calls: dict[str, EngineCall] = {}
        self.queues = LevelQueues()
        self.running: set[EngineCall] = set()
        self.closing = False
        self._recent: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._early: OrderedDict[str, Control] = OrderedDict()  # see `control`
        self._preempting = 0
        self._last_flush: dict[str, float] = {}
        # deferred starts (see `_start_writer`): calls whose start is not written yet, the
        # starts being written now, calls not yet known to be ours, each segment's start time
        self._start_pending: dict[str, EngineCall] = {}
        self._start_inflight: dict[str, asyncio.Future[bool]] = {}
        self._unconfirmed: set[str] = set()
        self._seg_t0: dict[str, float] = {}
        self._start_wake = asyncio.Event()
        self._start_task: asyncio.Task[None] | None = None
        self.finished = 0
        self.failed = 0
        self.preemptions = 0
        # Called once when the backend itself dies (e.g. vLLM's engine core was killed): the
        # service stops taking calls and exits non-zero; see `_backend_died`.
        self.on_backend_dead: Callable[[str], None] | None = None
        self.info = EngineInfo(engine_id=engine_id, backend=backend.name, model=backend.model)
        # spans of each call's engine phases and the engine metrics, when an OpenTelemetry SDK
        # is installed; else hooks that do nothing (the API's no-op spans still cost a third of
        # an idle engine's CPU per Dispatch taken: profiled in bench/overhead)
        self.otel: Any = EngineTelemetry(self) if _otel_installed() else _NoTelemetry()

    # ------------------------------------------------------------------ intake

    def offer(self, dispatch: Dispatch) -> bool:
        """Take a dispatched call into the local queues; False for a duplicate or stale one."""
        key = (dispatch.call_id, dispatch.attempt)
        if key in self._recent or self.closing:
            return False
        existing = self.calls.get(dispatch.call_id)
        if existing is not None:
            if existing.dispatch.attempt >= dispatch.attempt:
                return False
            self._lose(existing, "superseded by a newer dispatch")
        call = EngineCall(dispatch=dispatch, level=dispatch.level)
        self.calls[call.call_id] = call
        early = self._early.pop(call.call_id, None)
        if early is not None and early.level is not None and early.seq > call.control_seq:
            # a level change that overtook its Dispatch (older ones are in the Dispatch)
            call.level, call.control_seq = early.level, early.seq
            if early.tiebreak is not None:
                call.tiebreak = early.tiebreak
        self.queues.push(call)
        self.otel.offered(call)
        self._admit()
        return True

    # ------------------------------------------------------------------ admission

    def _admit(self) -> None:
        """Apply `plan_batch` to the running calls and the head of the waiting queues."""
        if self.closing or not self.queues:
            return
        max_batch = self.backend.max_batch
        budget = self.cfg.max_inflight_preemptions - self._preempting
        preemptive = self.cfg.preemption and budget > 0
        free = max_batch - len(self.running)
        if free <= 0 and not preemptive:
            return
        best = self.queues.best_level()
        if free <= 0 and (
            best is None or not any(c.level > best for c in self.running if c.stop_reason is None)
        ):
            return  # full, and nobody waiting outranks a running call's level: nothing to do
        # only the first `free + budget + 1` waiting calls can be reached by the walk
        waiting = self.queues.head(max(0, free) + max(0, budget) + 1)
        candidates = [
            Candidate(
                call_id=c,
                key=c.key,
                running=True,
                protected=(
                    c.state != "running"
                    or c.stop_reason is not None
                    or c.run_tokens < c.dispatch.min_run_tokens
                ),
            )
            for c in self.running
        ]
        candidates += [Candidate(call_id=c, key=c.key, running=False) for c in waiting]
        plan = plan_batch(
            candidates,
            max_seqs=max_batch,
            max_preemptions=max(0, budget),
            preemptive=preemptive,
        )
        # each preemption admits one waiting call past the free slots, in plan order
        by_victim = dict(zip(plan.preempt, plan.admit[max(0, free) :], strict=False))
        for victim in plan.preempt:
            assert isinstance(victim, EngineCall)
            winner = by_victim.get(victim)
            assert winner is None or isinstance(winner, EngineCall)
            self.preempt(
                victim,
                f"level {winner.level if winner else '?'} waiting at a full batch"
                + (f" (call {winner.call_id})" if winner else ""),
                by=winner.call_id if winner else None,
            )
        for call in plan.admit:
            assert isinstance(call, EngineCall)
            if len(self.running) >= max_batch:
                break  # its slot frees when the preempted call has stopped (then we re-plan)
            self.queues.remove(call)
            self._start(call)

    def preempt(
        self,
        call: EngineCall,
        reason: str,
        requeue_level: int | None = None,
        by: str | None = None,
    ) -> bool:
        if call.state != "running" or call.gen_task is None or call.stop_reason is not None:
            return False
        call.stop_reason, call.stop_detail, call.requeue_level = "preempt", reason, requeue_level
        call.preempted_by = by
        call.preempt_counted = True
        self._preempting += 1
        call.gen_task.cancel()
        return True

    def _start(self, call: EngineCall) -> None:
        call.state = "starting"
        self.running.add(call)
        call.task = asyncio.create_task(self._run(call), name=f"call-{call.call_id}")

    async def _run(self, call: EngineCall) -> None:
        cancelled = False
        try:
            with self.otel.segment(call):  # spans: queued (the wait before), run (this segment)
                await self._segment(call)
        except asyncio.CancelledError:
            cancelled = True  # the task itself was cancelled: the engine is being torn down
            raise
        except Exception as exc:
            self.log.exception("call segment crashed", call_id=call.call_id, error=repr(exc))
            with contextlib.suppress(Exception):
                await self._fail(call, ErrorCode.engine_failed, f"engine error: {exc!r}")
        finally:
            self.running.discard(call)
            if call.preempt_counted:
                call.preempt_counted = False
                self._preempting -= 1
            if not cancelled:  # no new segments from a teardown (they would outlive the loop)
                self._admit()

    # ------------------------------------------------------------------ one segment

    async def _segment(self, call: EngineCall) -> None:
        """Run one generation segment, then finish, fail, requeue or drop the call."""
        req = call.dispatch.request
        if call.prompt_ids is None:
            try:
                call.prompt_ids = await self._prompt_ids(req)
                self._check_length(call)
                if req.sampling.stop and not self._text(call).has_text:
                    raise BackendError(
                        "validation_error",
                        f"stop strings need a model with a tokenizer; {self.backend.name} model "
                        f"{self.backend.model!r} has none (use stop_token_ids)",
                    )
            except BackendError as exc:
                await self._fail(call, exc.code, exc.message)
                return
        if self.cfg.start_batch_s is None:  # the start is recorded before generating
            owned = await self._db(
                q.mark_running,
                self.pool,
                call_id=call.call_id,
                attempts=call.attempts,
                engine_id=self.engine_id,
                prompt_tokens=len(call.prompt_ids),
            )
            if not owned:
                self._drop(call, "not owned at start (re-dispatched or finished elsewhere)")
                return
        else:  # generate now; the start is recorded by `_start_writer` (ownership checked there)
            self._request_start(call)
        call.state = "running"
        call.run_start_tokens = len(call.tokens)
        finish: str | None = None
        error: BackendError | None = None
        if call.stop_reason is None:
            call.segments += 1
            sp = req.sampling
            gen = GenerationRequest(
                request_id=f"{call.call_id}:{call.attempts}:{call.segments}",
                prompt_token_ids=call.prompt_ids + call.tokens,
                max_tokens=call.remaining,
                temperature=sp.temperature,
                top_p=sp.top_p,
                seed=sp.seed,
                stop_token_ids=list(sp.stop_token_ids),
                ignore_eos=sp.ignore_eos,
                priority=call.backend_priority,
            )
            t0 = call.run_started = time.monotonic()
            call.gen_task = asyncio.create_task(self._generate(call, gen))
            try:
                finish = await call.gen_task
            except asyncio.CancelledError:
                if call.stop_reason is None:
                    raise  # we ourselves are being cancelled
            except BackendError as exc:
                error = exc
            finally:
                call.gen_task = None
                call.run_started = None
                call.run_s += time.monotonic() - t0
        if error is None and finish is not None:
            await self._finish(call, finish)  # confirms ownership itself, then streams the rest
            return
        if not await self._confirm_start(call):
            self._drop(call, "not owned at start (re-dispatched or finished elsewhere)")
            return
        await self._flush(call)
        if error is not None and getattr(self.backend, "dead", False):
            await self._backend_died(call, error)
        elif error is not None:
            await self._fail(call, error.code, error.message)
        else:
            await self._stopped(call)

    async def _generate(self, call: EngineCall, gen: GenerationRequest) -> str:
        agen = self.backend.generate(gen)
        try:
            reported_cache = False
            async for chunk in agen:
                if chunk.cached_prompt_tokens is not None and not reported_cache:
                    reported_cache = True
                    if call.cached_tokens is None:
                        call.cached_tokens = chunk.cached_prompt_tokens
                    # prompt tokens this segment computed (prefix-cache hits are free)
                    call.prefill_tokens += max(
                        0, len(gen.prompt_token_ids) - chunk.cached_prompt_tokens
                    )
                if chunk.token_ids:
                    call.tokens.extend(chunk.token_ids)
                    out = call.out
                    if out is not None and out.stops and out.check(call.tokens):
                        # a stop string is complete: keep the tokens up to it, end the request
                        # (closing the stream aborts it in the backend)
                        del call.tokens[out.stop_tokens :]
                        return "stop"
                    now = time.monotonic()
                    if (
                        len(call.tokens) - call.sent >= self.cfg.delta_max_tokens
                        or now - self._last_flush.get(call.call_id, 0.0)
                        >= self.cfg.delta_interval_s
                    ) and chunk.finish_reason is None:
                        await self._flush(call)
                if chunk.finish_reason is not None:
                    return chunk.finish_reason
            return "length" if call.remaining == 0 else "abort"
        finally:
            with contextlib.suppress(Exception):
                await agen.aclose()  # type: ignore[attr-defined]

    async def _backend_died(self, call: EngineCall, error: BackendError) -> None:
        """The backend is gone, not just this request: hand the call back with its progress (another
        engine resumes it, the caller's stream continues by offset) instead of failing it, stop
        admitting, and tell the service, which drains the rest and exits non-zero."""
        self.closing = True
        if self.on_backend_dead is not None:
            self.on_backend_dead(error.message)
        await self._hand_back([call], f"engine backend died: {error.message}")

    async def _stopped(self, call: EngineCall) -> None:
        reason, detail = call.stop_reason, call.stop_detail
        call.stop_reason = None
        if reason == "preempt":
            level = call.requeue_level if call.requeue_level is not None else call.level
            ok = await self._db(
                q.mark_preempted,
                self.pool,
                call_id=call.call_id,
                attempts=call.attempts,
                engine_id=self.engine_id,
                output_token_ids=call.tokens[: call.sent],
                level=level,
                reason=detail,
                service=call.service,
                run_s=call.run_s,
                other_call_id=call.preempted_by,
            )
            call.preempted_by = None
            if not ok:
                self._drop(call, "not owned at preemption")
                return
            # its last progress, now: it will not be in the running calls' periodic reports
            await self.publish_report(self.progress_of([call]))
            call.saved = call.sent
            call.preemptions += 1
            self.preemptions += 1
            self.otel.preempted(call, detail, level)
            call.level = level
            call.state = "waiting"
            self.queues.push(call, front=True)
            self.log.info(
                "call preempted", call_id=call.call_id, tokens=len(call.tokens), reason=detail
            )
            return
        if reason == "cancel":
            await self._fail(call, ErrorCode.cancelled, detail or "cancelled")
        elif reason == "shutdown":
            await self._hand_back([call], "engine shutting down")
        else:
            self._drop(call, detail or "ownership lost")

    # ------------------------------------------------------------------ replies

    def _text(self, call: EngineCall) -> OutputText:
        """The call's output text tracker (stop strings, prefix-stable text deltas)."""
        if call.out is None:
            call.out = OutputText(self.backend.detokenize, call.dispatch.request.sampling.stop)
        return call.out

    async def _flush(self, call: EngineCall, final: bool = False) -> None:
        """Stream the tokens not yet sent. Mid-call, text that may be the start of a stop string
        is held back (with its tokens); `final` sends everything (the call has ended)."""
        if call.sent >= len(call.tokens) or call.call_id in self._unconfirmed:
            return  # nothing new, or not yet known to be ours: no tokens to the caller yet
        out = self._text(call)
        upto = len(call.tokens) if final else out.releasable(call.tokens, call.sent)
        if upto <= call.sent:
            return
        if not call.dispatch.request.stream:
            # nobody reads deltas: the tokens count as released (progress and preemption save
            # `tokens[:sent]`), the final carries them all
            call.sent = upto
            return
        new = call.tokens[call.sent : upto]
        delta = TokenDelta(
            call_id=call.call_id,
            offset=call.sent,
            token_ids=new,
            text=out.delta(call.tokens, call.sent, upto),
        )
        call.sent = upto
        self._last_flush[call.call_id] = time.monotonic()
        await self.nc.publish(call.dispatch.reply_to, encode(delta))
        self.otel.streamed(len(new))

    async def _finish(self, call: EngineCall, finish_reason: str) -> None:
        assert call.prompt_ids is not None
        started_ago: float | None = None
        if self.calls.get(call.call_id) is not call:  # a newer attempt arrived here meanwhile
            self._drop(call, "superseded by a newer dispatch")
            return
        if self._start_pending.pop(call.call_id, None) is not None:
            # ended before its start was written: the (conditional) finish below records the
            # start too and is the ownership check; one statement instead of two
            started_ago = time.monotonic() - self._seg_t0.get(call.call_id, time.monotonic())
        elif not await self._confirm_start(call):
            self._drop(call, "not owned at start (re-dispatched or finished elsewhere)")
            return
        row = await self._db(
            q.finish_call,
            self.pool,
            call_id=call.call_id,
            attempts=call.attempts,
            engine_id=self.engine_id,
            prompt_tokens=len(call.prompt_ids),
            completion_tokens=len(call.tokens),
            cached_tokens=call.cached_tokens or 0,
            service=call.service,
            run_s=call.run_s,
            finish_reason=finish_reason,
            output_token_ids=call.tokens,
            started_ago_s=started_ago,
        )
        self._unconfirmed.discard(call.call_id)
        if row is None:
            self._drop(call, "not owned at finish; result discarded")
            return
        await self._flush(call, final=True)  # the last tokens as a delta, before the final
        final = CallFinal(
            call_id=call.call_id,
            program_id=row.program_id,
            finish_reason=finish_reason,  # type: ignore[arg-type]
            token_ids=call.tokens
            if self.cfg.final_token_ids or not call.dispatch.request.stream
            else None,
            text=self._text(call).final(call.tokens),
            usage=Usage(
                prompt_tokens=len(call.prompt_ids),
                completion_tokens=len(call.tokens),
                cached_tokens=call.cached_tokens or 0,
            ),
            timing=Timing(
                accepted_at=row.accepted_at,
                dispatched_at=row.dispatched_at,
                started_at=row.started_at,
                finished_at=row.finished_at,
                queue_s=row.queue_s,
                run_s=call.run_s,
            ),
            engine=self.info,
            preemptions=row.preemptions,
            level=row.level,
        )
        await self.nc.publish(row.reply_to, encode(final))
        self.finished += 1
        self.otel.finished(call, final)
        self._done(call)

    async def _fail(self, call: EngineCall, code: str, message: str) -> None:
        reply_to = await self._db(
            q.fail_call,
            self.pool,
            call_id=call.call_id,
            code=str(code),
            message=message,
            actor=self.engine_id,
            from_statuses=q.ACTIVE,
            attempts=call.attempts,
            engine_id=self.engine_id,
        )
        if reply_to is not None:
            err = CallError(
                call_id=call.call_id,
                code=ErrorCode(code) if code in ErrorCode.__members__ else ErrorCode.engine_failed,
                message=message,
                retryable=str(code) in _RETRYABLE,
            )
            await self.nc.publish(reply_to, encode(err))
            self.failed += 1
            self.otel.failed(call, str(code), message)
            self.log.info("call failed", call_id=call.call_id, code=str(code), message=message)
        self._done(call)

    def _drop(self, call: EngineCall, why: str) -> None:
        self.log.info("call dropped", call_id=call.call_id, attempt=call.dispatch.attempt, why=why)
        self._done(call)

    def _done(self, call: EngineCall) -> None:
        call.state = "done"
        self.otel.done(call)
        if self.calls.get(call.call_id) is call:
            del self.calls[call.call_id]
        self._last_flush.pop(call.call_id, None)
        if self.calls.get(call.call_id) is None:  # not when a newer attempt took its place
            self._start_pending.pop(call.call_id, None)
            self._unconfirmed.discard(call.call_id)
            self._seg_t0.pop(call.call_id, None)
        self._recent[(call.call_id, call.dispatch.attempt)] = None
        while len(self._recent) > 50_000:
            self._recent.popitem(last=False)

    def _lose(self, call: EngineCall, why: str) -> None:
        """Stop working on a call this engine no longer owns (no DB writes, no replies)."""
        if call.state == "waiting":
            self.queues.remove(call)
            self._drop(call, why)
        elif call.state == "running" and call.gen_task is not None and call.stop_reason is None:
            call.stop_reason, call.stop_detail = "lost", why
            call.gen_task.cancel()
        elif call.state == "starting":
            call.stop_reason, call.stop_detail = "lost", why

    # ------------------------------------------------------------------ starts

    def _request_start(self, call: EngineCall) -> None:
        """Queue this segment's `running` transition for the next batch write.

        Why deferred: the start record used to be a round trip (and a commit) between taking a
        call and generating its first token. Now generation starts at once and `_start_writer`
        records the starts of every call begun within `start_batch_s` in one statement. What
        the start record guarded is kept: no token reaches the caller before the engine knows
        the call is its own (`_flush` waits for the write), a call that turns out not to be ours
        is stopped (`_lose`), preemption and progress saving wait for it (`_confirm_start`),
        and a call that ends before the write is finished by the conditional `finish_call`,
        which records the start too (one statement instead of two).
        """
        self._seg_t0[call.call_id] = time.monotonic()
        self._unconfirmed.add(call.call_id)
        self._start_pending[call.call_id] = call
        self._start_wake.set()
        if self._start_task is None or self._start_task.done():
            self._start_task = asyncio.create_task(self._start_writer(), name="start-writer")

    async def _confirm_start(self, call: EngineCall) -> bool:
        """Wait until this segment's start is written; False when the call is not ours."""
        if self.calls.get(call.call_id) is not call:
            return False  # superseded by a newer attempt (the bookkeeping below is its own)
        if call.call_id not in self._unconfirmed:
            return True
        fut = self._start_inflight.get(call.call_id)
        if fut is None:
            if call.call_id not in self._start_pending:
                return False  # written, and the write found it was not ours
            fut = asyncio.get_running_loop().create_future()
            self._start_inflight[call.call_id] = fut
            self._start_wake.set()
        return await asyncio.shield(fut)

    async def _start_writer(self) -> None:
        window = self.cfg.start_batch_s or 0.0
        while True:
            await self._start_wake.wait()
            if window > 0 and not self._start_inflight:
                await asyncio.sleep(window)  # nobody waits: gather the starts of a window
            self._start_wake.clear()
            batch, self._start_pending = self._start_pending, {}
            if not batch:
                continue
            now = time.monotonic()
            items = [
                (
                    c.call_id,
                    c.attempts,
                    len(c.prompt_ids or ()),
                    now - self._seg_t0.get(c.call_id, now),
                )
                for c in batch.values()
            ]
            for cid in batch:
                self._start_inflight.setdefault(cid, asyncio.get_running_loop().create_future())
            try:
                owned = await self._db(q.mark_running_many, self.pool, self.engine_id, items)
            except Exception as exc:  # Postgres down for good: try these again next round
                self.log.warning("start records not written; retrying", error=repr(exc))
                for cid, c in batch.items():
                    if c.state != "done":
                        self._start_pending.setdefault(cid, c)
                self._start_wake.set()
                await asyncio.sleep(1.0)
                continue
            for cid, c in batch.items():
                fut = self._start_inflight.pop(cid, None)
                mine = cid in owned
                if mine:
                    self._unconfirmed.discard(cid)
                if fut is not None and not fut.done():
                    fut.set_result(mine)
                if not mine and c.state == "running" and self.calls.get(cid) is c:
                    self._lose(c, "not owned at start (re-dispatched or finished elsewhere)")
                elif mine and c.state == "running" and c.sent < len(c.tokens):
                    await self._flush(c)  # tokens held back while unconfirmed

    # ------------------------------------------------------------------ database

    async def _db(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one of the call's conditional transitions, retrying through a Postgres outage
        (~15 s). They are idempotent, so a retry after an unclear failure is safe; if it still
        fails the error propagates and the orphan sweep hands the call back later."""
        delay = 0.1
        for attempt in range(8):
            try:
                return await fn(*args, **kwargs)
            except (OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError):
                if attempt == 7:
                    raise
                self.log.warning("database unavailable, retrying", op=fn.__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 4.0)
        raise AssertionError("unreachable")

    async def sweep_orphans(self, older_than_s: float = 30.0) -> int:
        """Hand back calls Postgres says this engine owns but it does not hold (a Dispatch lost
        in transit, a transition that failed for good): otherwise nobody would ever run them,
        since this engine is alive and the reaper only takes calls from lost engines."""
        rows = await q.engine_active_calls(self.pool, self.engine_id, older_than_s=older_than_s)
        known = {(c.call_id, c.attempts) for c in self.calls.values() if c.state != "done"}
        # a call finished or failed here whose transition never committed is an orphan too
        orphans = [r for r in rows if (r.id, r.attempts) not in known]
        handed = []
        for r in orphans:
            row = await q.requeue_call(
                self.pool,
                r.id,
                attempts=r.attempts,
                engine_id=self.engine_id,
                actor=self.engine_id,
                reason="orphaned on a live engine",
            )
            if row is not None:
                handed.append(row)
        if handed:
            await bus.publish_schedule(self.js, self.subjects, handed, reason="redispatch")
            self.log.warning("orphaned calls handed back", calls=len(handed))
        return len(handed)

    # ------------------------------------------------------------------ prompts

    async def _prompt_ids(self, req: CallRequest) -> list[int]:
        if req.prompt_token_ids is not None:
            return list(req.prompt_token_ids)
        if req.prompt is not None:
            if len(req.prompt) > 20_000:  # real tokenizers take a while on long text
                return await asyncio.to_thread(self.backend.tokenize, req.prompt)
            return self.backend.tokenize(req.prompt)
        assert req.messages is not None
        messages = [m.model_dump(exclude_none=True) for m in req.messages]
        template = getattr(self.backend, "apply_chat_template", None)
        if template is not None:
            return await asyncio.to_thread(template, messages)
        text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "
        return self.backend.tokenize(text)

    def _check_length(self, call: EngineCall) -> None:
        assert call.prompt_ids is not None
        n, limit = len(call.prompt_ids), self.backend.max_model_len
        if n + call.max_tokens > limit:
            raise BackendError(
                ErrorCode.prompt_too_long.value,
                f"prompt has {n} tokens and max_tokens is {call.max_tokens}: more than the "
                f"model's {limit}-token context ({self.backend.name} engine {self.engine_id})",
            )

    # ------------------------------------------------------------------ control

    def control(self, msg: Control) -> None:
        """Apply a scheduler's Control message; idempotent (repeats and stale seqs are no-ops).

        A level change for a call not here yet (its Dispatch is still on its way: a promotion
        of a just-dispatched call) is kept for a while and applied when the Dispatch arrives,
        else the engine would run it at the level the Dispatch carried."""
        call = self.calls.get(msg.call_id)
        if call is None:
            if msg.action == "set_level":
                prev = self._early.get(msg.call_id)
                if prev is None or msg.seq > prev.seq:
                    self._early[msg.call_id] = msg
                    while len(self._early) > 10_000:
                        self._early.popitem(last=False)
            return
        if msg.seq and msg.seq <= call.control_seq:
            return
        call.control_seq = max(call.control_seq, msg.seq)
        if msg.action == "set_level" and msg.level is not None:
            if call.state == "waiting":
                self.queues.set_level(call, msg.level, msg.tiebreak)
            else:
                call.level = msg.level
                if msg.tiebreak is not None:
                    call.tiebreak = msg.tiebreak
                if call.stop_reason == "preempt":
                    call.requeue_level = msg.level  # it re-enters the queues at the new level
        elif msg.action == "preempt":
            if call.state == "running":
                self.preempt(call, msg.reason or "scheduler preempt", msg.level)
            elif call.state == "waiting" and msg.level is not None:
                self.queues.set_level(call, msg.level, msg.tiebreak)
        elif msg.action == "cancel":
            if call.state == "waiting":
                self.queues.remove(call)
                call.state = "done"  # not admitted again; _fail below finishes the bookkeeping
                call.task = asyncio.create_task(
                    self._fail(call, ErrorCode.cancelled, msg.reason or "cancelled")
                )
            elif call.stop_reason is None:
                call.stop_reason, call.stop_detail = "cancel", msg.reason or "cancelled"
                if call.gen_task is not None:
                    call.gen_task.cancel()
        self._admit()

    # ------------------------------------------------------------------ periodic work

    async def save_progress_and_check(self) -> None:
        """Persist streamed tokens of running calls; drop calls this engine no longer owns."""
        calls = [c for c in list(self.running) if c.state == "running" and c.sent > c.saved]
        items = [(c.call_id, c.attempts, c.tokens[: c.sent]) for c in calls]
        if items:
            await q.save_progress(self.pool, self.engine_id, items)
            # what was written, not what has been sent since (the save took a round trip)
            for c, (_, _, toks) in zip(calls, items, strict=True):
                c.saved = max(c.saved, len(toks))
        now = time.monotonic()
        mine = [c for c in self.calls.values() if now - c.arrived > 2.0 and c.state != "done"]
        if not mine:
            return
        owned = await q.owned_calls(self.pool, self.engine_id, [c.call_id for c in mine])
        for c in mine:
            if owned.get(c.call_id) != c.attempts and c.state != "done":
                self._lose(c, "no longer owned (re-dispatched or finished elsewhere)")

    def progress(self, changed_only: bool = False) -> list[CallProgress]:
        """Progress of the running calls (only those whose service moved since the last
        report, with `changed_only`): what a ServiceReport carries."""
        return self.progress_of(list(self.running), changed_only)

    def progress_of(
        self, calls: list[EngineCall], changed_only: bool = False
    ) -> list[CallProgress]:
        now = time.monotonic()
        out = []
        for c in calls:
            service = c.service
            if changed_only and service <= c.reported:
                continue
            c.reported = service
            out.append(
                CallProgress(
                    call_id=c.call_id,
                    program_id=c.dispatch.program_id,
                    thread_id=c.dispatch.thread_id,
                    tokens=len(c.tokens),
                    running=c.state == "running",
                    service=service,
                    run_s=round(c.run_seconds(now), 6),
                )
            )
        return out

    async def publish_report(self, progress: list[CallProgress]) -> None:
        """One `ServiceReport` to the schedulers (at-most-once: reports are cumulative)."""
        if not progress:
            return
        report = ServiceReport(engine_id=self.engine_id, at=datetime.now(UTC), calls=progress)
        with contextlib.suppress(Exception):
            await self.nc.publish(self.subjects.reports, encode(report))

    # ------------------------------------------------------------------ shutdown

    async def _hand_back(self, calls: list[EngineCall], why: str) -> None:
        """Give calls back to the schedulers (queued, progress saved) for another engine."""
        rows = []
        for c in calls:
            if c.state == "running" and c.sent > c.saved:
                await q.save_progress(
                    self.pool, self.engine_id, [(c.call_id, c.attempts, c.tokens[: c.sent])]
                )
            row = await self._db(
                q.requeue_call,
                self.pool,
                c.call_id,
                attempts=c.attempts,
                engine_id=self.engine_id,
                actor=self.engine_id,
                reason=why,
            )
            if row is not None:
                rows.append(row)
            self._done(c)
        if rows:
            await bus.publish_schedule(self.js, self.subjects, rows, reason="redispatch")

    async def drain(self, timeout_s: float) -> None:
        """Stop admitting; hand waiting calls back now, let running ones finish for up to
        `timeout_s`, then hand those back too (they resume elsewhere from their progress)."""
        self.closing = True
        waiting = self.queues.all()
        for c in waiting:
            self.queues.remove(c)
        await self._hand_back(waiting, "engine draining (not started)")
        tasks = [c.task for c in list(self.running) if c.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout_s)
            if pending:
                for c in list(self.running):
                    if c.state == "running" and c.gen_task is not None and c.stop_reason is None:
                        c.stop_reason, c.stop_detail = "shutdown", "engine shutting down"
                        c.gen_task.cancel()
                    elif c.state == "starting":
                        c.stop_reason, c.stop_detail = "shutdown", "engine shutting down"
                await asyncio.wait(pending, timeout=10.0)
        if self._start_task is not None:
            self._start_task.cancel()
            with contextlib.suppress(BaseException):
                await self._start_task
