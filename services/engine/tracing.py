"""The engine's share of a call's trace, and the engine metrics (OpenTelemetry).

Why a module of its own: the runner (`runner.py`) is the engine's scheduler-of-record and changes
with the scheduling work; tracing hooks into it at a few named moments (`offered`, `segment`,
`preempted`, `finished`, `failed`, `done`, `streamed`) and keeps its own bookkeeping here.

Per call, under the scheduler's `autellix.schedule` span (whose context the `Dispatch` carries):

    autellix.engine.call            offer → done; GenAI attributes (model, input/output tokens,
    │                               finish reason), level, preemptions; events `preempted`
    ├── autellix.engine.queued      waiting in the engine's level queues (again after each
    ├── autellix.engine.run         preemption); one `run` per generation segment, with a
    ├── autellix.engine.queued      `resumed` event when it continues a preempted call
    └── autellix.engine.run

Metrics (names under `autellix.engine.*`, attributes `autellix.engine_id`, `autellix.backend`,
and `autellix.level` for queue depth): `queue_depth` and `running` (gauges), `preemptions` and
`output_tokens` (counters; tokens/s is their rate), `tokens_per_second` (gauge, since the last
collection), and the GenAI semantic-convention histograms `gen_ai.server.request.duration` and
`gen_ai.server.time_per_output_token`; `metrics.py` adds batch capacity, time to first token,
prefix-cache tokens and failed calls.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

from autellix.runtime import telemetry
from autellix.services.engine.metrics import REQUEST_S, TOKEN_S, EngineMetrics


def _operation(call: Any) -> str:
    req = call.dispatch.request
    return "chat" if req.messages is not None else "text_completion"


class EngineTelemetry:
    def __init__(self, runner: Any) -> None:
        self.runner = runner
        self.engine_id: str = runner.engine_id
        self.backend: str = runner.backend.name
        self.model: str = runner.backend.model
        # keyed by (call id, attempt): a re-dispatch of the same call is a different entry
        self._spans: dict[tuple[str, int], Any] = {}  # open autellix.engine.call spans
        self._waiting_since: dict[tuple[str, int], int] = {}  # when it (re)queued, ns (wall)
        self._tokens_total = 0
        self._levels = 0
        self._rate_mark = (time.monotonic(), 0)
        self._base = {"engine_id": self.engine_id, "backend": self.backend}
        m = telemetry.meter("autellix.engine")
        telemetry.gauge(
            m,
            "autellix.engine.queue_depth",
            self._queue_depths,
            "calls waiting in the engine, per MLFQ level",
        )
        telemetry.gauge(
            m, "autellix.engine.running", self._running, "calls admitted to the backend's batch"
        )
        telemetry.gauge(
            m,
            "autellix.engine.tokens_per_second",
            self._tokens_per_second,
            "output tokens per second since the previous collection",
            "{token}/s",
        )
        self.preemptions = telemetry.counter(
            m, "autellix.engine.preemptions", "calls preempted", "{preemption}"
        )
        self.tokens = telemetry.counter(
            m, "autellix.engine.output_tokens", "tokens streamed", "{token}"
        )
        self.duration = telemetry.histogram(
            m, "gen_ai.server.request.duration", "dispatch to final answer", REQUEST_S
        )
        self.per_token = telemetry.histogram(
            m, "gen_ai.server.time_per_output_token", "run time per token", TOKEN_S
        )
        self.metrics = EngineMetrics(runner, self._base)  # batch, TTFT, prefix cache, failures

    # ------------------------------------------------------------------ metric callbacks

    def _queue_depths(self, _: Any) -> list[Any]:
        depths = list(self.runner.queues.depths())
        # every level seen so far is reported, 0 when empty, so a drained queue reads 0
        self._levels = max(self._levels, len(depths), 1)
        depths += [0] * (self._levels - len(depths))
        return [
            telemetry.observation(n, level=level, **self._base) for level, n in enumerate(depths)
        ]

    def _running(self, _: Any) -> list[Any]:
        return [telemetry.observation(len(self.runner.running), **self._base)]

    def _tokens_per_second(self, _: Any) -> list[Any]:
        now, total = time.monotonic(), self._tokens_total
        then, before = self._rate_mark
        self._rate_mark = (now, total)
        rate = (total - before) / (now - then) if now > then else 0.0
        return [telemetry.observation(rate, **self._base)]

    # ------------------------------------------------------------------ hooks

    def offered(self, call: Any) -> None:
        """A Dispatch was taken into the local queues: the engine's part of the call starts."""
        d = call.dispatch
        sp = telemetry.start_span(
            "autellix.engine.call",
            telemetry.remote_parent(d.trace, d.program_id),
            call_id=call.call_id,
            program_id=d.program_id,
            thread_id=d.thread_id,
            attempt=d.attempt,
            level=call.level,
            engine_id=self.engine_id,
            backend=self.backend,
            resumed_tokens=len(d.resume_token_ids) or None,
            **{
                "gen_ai.operation.name": _operation(call),
                "gen_ai.provider.name": "autellix",
                "gen_ai.conversation.id": d.program_id,
                "gen_ai.request.model": self.model,
                "gen_ai.request.max_tokens": d.request.sampling.max_tokens,
                "gen_ai.request.temperature": d.request.sampling.temperature,
            },
        )
        self._spans[_key(call)] = sp
        self._waiting_since[_key(call)] = time.time_ns()

    @contextlib.contextmanager
    def segment(self, call: Any) -> Iterator[Any]:
        """One generation segment: records the wait before it, and runs inside `run`."""
        parent = self._spans.get(_key(call))
        ctx = (
            _in(parent)
            if parent is not None
            else telemetry.remote_parent(call.dispatch.trace, call.dispatch.program_id)
        )
        now_ns = time.time_ns()
        since_ns = min(now_ns, self._waiting_since.pop(_key(call), now_ns))
        resumed = call.segments > 0 or bool(call.dispatch.resume_token_ids)
        queued = telemetry.start_span(
            "autellix.engine.queued",
            ctx,
            start_time=since_ns,
            level=call.level,
            after_preemption=call.segments > 0,
        )
        queued.end(end_time=now_ns)
        with telemetry.span(
            "autellix.engine.run",
            context=ctx,
            call_id=call.call_id,
            level=call.level,
            segment=call.segments + 1,
            resumed=resumed,
            engine_id=self.engine_id,
        ) as sp:
            if resumed:
                telemetry.add_event("resumed", sp, tokens_so_far=len(call.tokens))
            yield sp

    def preempted(self, call: Any, reason: str | None, level: int) -> None:
        self._waiting_since[_key(call)] = time.time_ns()
        attrs = {"reason": reason, "level": level, "tokens_so_far": len(call.tokens)}
        telemetry.add_event("preempted", None, **attrs)  # on the segment's run span
        parent = self._spans.get(_key(call))
        if parent is not None:
            telemetry.add_event("preempted", parent, **attrs)
        self.preemptions.add(1, telemetry.attrs(**self._base))

    def first_token(self, call: Any) -> None:
        """The backend produced the call's first token (not again when it resumes)."""
        self.metrics.first_token(call.dispatch.accepted_at)

    def streamed(self, n: int) -> None:
        self._tokens_total += n
        self.tokens.add(n, telemetry.attrs(**self._base))

    def finished(self, call: Any, final: Any) -> None:
        u = final.usage
        attrs = {
            "gen_ai.response.model": final.engine.model,
            "gen_ai.response.id": final.call_id,
            "gen_ai.response.finish_reasons": [final.finish_reason],
            "gen_ai.usage.input_tokens": u.prompt_tokens,
            "gen_ai.usage.output_tokens": u.completion_tokens,
            "gen_ai.usage.cache_read.input_tokens": u.cached_tokens,
            "preemptions": final.preemptions,
            "final_level": final.level,
            "queue_s": final.timing.queue_s,
            "run_s": final.timing.run_s,
        }
        telemetry.set_attributes(None, **attrs)
        # inside the run span: the log line carries its trace_id and span_id
        self.runner.log.debug(
            "call finished",
            call_id=call.call_id,
            tokens=u.completion_tokens,
            level=final.level,
            preemptions=final.preemptions,
        )
        sp = self._spans.get(_key(call))
        if sp is not None:
            telemetry.set_attributes(sp, **attrs)
        base = telemetry.attrs(**self._base, **{"gen_ai.request.model": self.model})
        total_s = (final.timing.finished_at - final.timing.accepted_at).total_seconds()
        self.duration.record(max(0.0, total_s), base)
        if u.completion_tokens:
            self.per_token.record(final.timing.run_s / u.completion_tokens, base)
        self.metrics.prompt_served(u.prompt_tokens, u.cached_tokens)

    def failed(self, call: Any, code: str, message: str) -> None:
        self.metrics.call_failed(code)
        sp = self._spans.get(_key(call))
        if sp is not None:
            telemetry.record_error(sp, str(code), message)

    def done(self, call: Any) -> None:
        """The engine is finished with the call (answered, failed, dropped or handed back)."""
        self._waiting_since.pop(_key(call), None)
        sp = self._spans.pop(_key(call), None)
        if sp is not None:
            sp.end()


def _key(call: Any) -> tuple[str, int]:
    return (call.call_id, call.dispatch.attempt)


def _in(sp: Any) -> Any:
    from opentelemetry import trace

    return trace.set_span_in_context(sp)
