"""Fuzz every NATS subject a running stack accepts, as a hostile peer would, and count what
went wrong: `{cases, crashes, internal_errors}`.

Cases come from Hypothesis (`chaos_strategies.payloads`, one strategy per subject built from
its message's JSON Schema) and are sent with concurrency. What each subject must do with them:

* request subjects (call submit, program open/close/cancel, call cancel, the schedulers' and
  an engine's direct hops) answer every message with their typed reply or a typed `CallError`,
  never `internal`; a call that is accepted ends with its final or a typed error, never
  `internal`. No answer within `timeout_s`, "no responders" or an answer that is not the
  subject's reply type counts as a crash;
* fire-and-forget subjects (engine control, heartbeats, service reports) and the JetStream
  queues (schedule calls, an engine's dispatch queue) answer nothing: the caller of `fuzz`
  checks that the services are still up and serving afterwards (`still_serving`).

Forged *valid* heartbeats are not sent: a peer allowed to publish heartbeats can announce an
engine that does not exist, which is what per-role NATS permissions prevent, not input checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from hypothesis import given, seed
from hypothesis import strategies as st
from pydantic import BaseModel, TypeAdapter, ValidationError

from autellix.bench.chaos_strategies import fuzz_settings, headers, payloads
from autellix.wire import protocol as p

#: valid calls among the cases stay short: they run on the stack's engines
FUZZ_CAPS = {"max_tokens": 8}


@dataclass(frozen=True)
class Target:
    """One subject and what it must answer (`reply` None: it answers nothing)."""

    name: str
    subject: str
    model: type[BaseModel]
    reply: TypeAdapter[Any] | None
    jetstream: bool = False
    streams: bool = False  # answers a stream of replies ending in a final (call submit)
    forbid_valid: bool = False  # never send a message that validates (see the module doc)


@dataclass
class FuzzReport:
    """What the fuzz found; `failures` keeps the first few cases that went wrong."""

    cases: int = 0
    crashes: int = 0
    internal_errors: int = 0
    per_subject: dict[str, int] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)

    def record(self, target: Target, payload: bytes, problem: str | None, internal: bool) -> None:
        self.cases += 1
        self.per_subject[target.name] = self.per_subject.get(target.name, 0) + 1
        if problem is None:
            return
        if internal:
            self.internal_errors += 1
        else:
            self.crashes += 1
        if len(self.failures) < 20:
            self.failures.append(
                {"subject": target.name, "problem": problem, "payload": _show(payload)}
            )

    def summary(self) -> dict[str, int]:
        """The `fuzz` entry of chaos.json."""
        return {
            "cases": self.cases,
            "crashes": self.crashes,
            "internal_errors": self.internal_errors,
        }

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _show(payload: bytes) -> str:
    text = payload.decode("utf-8", "backslashreplace")
    return text if len(text) <= 300 else f"{text[:300]}... ({len(payload)} bytes)"


def _either(*models: type[BaseModel]) -> TypeAdapter[Any]:
    union: Any = models[0]
    for m in models[1:]:
        union = union | m
    return TypeAdapter(union)


#: request subjects not every deployment of the protocol has: (name, Subjects attribute,
#: request model, reply model), fuzzed where all three exist
_OPTIONAL = (
    ("program.cancel", "program_cancel", "ProgramCancel", "ProgramCancelReply"),
    ("call.resume", "resume", "CallResume", "CallResumeReply"),
)


def targets(subjects: p.Subjects, engine_id: str) -> list[Target]:
    """Every subject the services subscribe to; `engine_id`: the engine whose subjects to hit."""
    out = [
        Target("call.submit", subjects.submit, p.CallRequest, p.CALL_REPLY, streams=True),
        Target(
            "program.open",
            subjects.program_open,
            p.ProgramOpen,
            _either(p.ProgramReply, p.CallError),
        ),
        Target(
            "program.close",
            subjects.program_close,
            p.ProgramClose,
            _either(p.ProgramReply, p.CallError),
        ),
        Target(
            "call.cancel", subjects.cancel, p.CallCancel, _either(p.CallCancelReply, p.CallError)
        ),
        Target("sched.direct", subjects.sched_direct, p.ScheduleCall, TypeAdapter(p.DirectReply)),
        Target(
            "engine.direct",
            subjects.dispatch_direct(engine_id),
            p.Dispatch,
            TypeAdapter(p.DirectReply),
        ),
        Target("engine.control", subjects.control(engine_id), p.Control, None),
        Target("engine.heartbeat", subjects.heartbeat, p.EngineHeartbeat, None, forbid_valid=True),
        Target(
            "engine.heartbeat (batch)",
            subjects.heartbeat,
            p.EngineHeartbeats,
            None,
            forbid_valid=True,
        ),
        Target("report", subjects.reports, p.ServiceReport, None),
        Target(
            "sched.call (JetStream)", subjects.sched_calls, p.ScheduleCall, None, jetstream=True
        ),
        Target(
            "engine.q (JetStream)",
            subjects.dispatch(engine_id, 0),
            p.Dispatch,
            None,
            jetstream=True,
        ),
    ]
    for name, attr, model, reply in _OPTIONAL:
        subject, m, r = (
            getattr(subjects, attr, None),
            getattr(p, model, None),
            getattr(p, reply, None),
        )
        if subject is not None and m is not None and r is not None:
            out.append(Target(name, subject, m, _either(r, p.CallError)))
    return out


def draw_cases(target: Target, n: int, rng_seed: int) -> list[tuple[bytes, dict[str, str] | None]]:
    """`n` (payload, headers) pairs for `target`, drawn by Hypothesis with seed `rng_seed`."""
    if n <= 0:
        return []
    got: list[tuple[bytes, dict[str, str] | None]] = []
    strategy = st.tuples(payloads(target.model.model_json_schema(), FUZZ_CAPS), headers())

    @seed(rng_seed)
    @fuzz_settings(n)
    @given(strategy)
    def collect(case: tuple[bytes, dict[str, str] | None]) -> None:
        if target.forbid_valid and _validates(target.model, case[0]):
            return
        got.append(case)

    collect()
    return got[:n]


def _validates(model: type[BaseModel], payload: bytes) -> bool:
    try:
        model.model_validate_json(payload)
    except (ValidationError, ValueError):
        return False
    return True


def _problem(target: Target, data: bytes) -> tuple[str | None, bool]:
    """(what is wrong with reply `data`, whether it is an `internal` error)."""
    assert target.reply is not None
    try:
        reply = target.reply.validate_json(data)
    except ValidationError as exc:
        return f"reply is not a {target.name} reply: {_show(data)} ({str(exc)[:200]})", False
    if isinstance(reply, p.CallError) and reply.code == p.ErrorCode.internal:
        return f"internal error: {reply.message[:300]}", True
    return None, False


class _Streams:
    """Replies to submitted calls, per reply subject, until each one's final (or error)."""

    def __init__(self, nc: Any) -> None:
        self.nc = nc
        self.prefix = nc.new_inbox()
        self.waiting: dict[str, tuple[asyncio.Future[None], list[bytes]]] = {}
        self.sub: Any = None
        self._sent = itertools.count()

    async def start(self) -> _Streams:
        self.sub = await self.nc.subscribe(f"{self.prefix}.*", cb=self._on_msg)
        return self

    async def _on_msg(self, msg: Any) -> None:
        entry = self.waiting.get(msg.subject)
        if entry is None:
            return
        done, got = entry
        got.append(msg.data)
        if _ends_stream(msg.data) and not done.done():
            done.set_result(None)

    async def submit(
        self, subject: str, payload: bytes, hdrs: Any, timeout_s: float
    ) -> list[bytes]:
        inbox = f"{self.prefix}.{next(self._sent)}"
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        got: list[bytes] = []
        self.waiting[inbox] = (done, got)
        await self.nc.publish(subject, payload, reply=inbox, headers=hdrs)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done, timeout_s)
        del self.waiting[inbox]
        return got

    async def stop(self) -> None:
        if self.sub is not None:
            with contextlib.suppress(Exception):
                await self.sub.unsubscribe()


def _ends_stream(data: bytes) -> bool:
    """Whether a reply to a call is its last: a final, an error, or not a reply at all."""
    try:
        return not isinstance(p.CALL_REPLY.validate_json(data), p.CallAccepted | p.TokenDelta)
    except ValidationError:
        return True


async def _one(
    nc: Any, js: Any, streams: _Streams, target: Target, payload: bytes, hdrs: Any, timeout_s: float
) -> tuple[str | None, bool]:
    if target.streams:
        got = await streams.submit(target.subject, payload, hdrs, timeout_s)
        if not got:
            return f"no answer within {timeout_s}s", False
        for data in got:
            problem = _problem(target, data)
            if problem[0] is not None:
                return problem
        if not _ends_stream(got[-1]):
            return f"accepted but not answered within {timeout_s}s", False
        return None, False
    if target.jetstream:
        await js.publish(target.subject, payload, headers=hdrs, timeout=timeout_s)
        return None, False
    if target.reply is None:
        await nc.publish(target.subject, payload, headers=hdrs)
        return None, False
    try:
        msg = await nc.request(target.subject, payload, timeout=timeout_s, headers=hdrs)
    except Exception as exc:  # timeout, no responders: nobody answered
        return f"no answer: {exc!r}", False
    return _problem(target, msg.data)


async def fuzz(
    nc: Any,
    subjects: p.Subjects,
    engine_id: str,
    cases: int,
    rng_seed: int | None = None,
    concurrency: int = 32,
    timeout_s: float = 20.0,
    on_progress: Callable[[FuzzReport], Awaitable[None] | None] | None = None,
) -> FuzzReport:
    """Send about `cases` fuzz cases, spread evenly over `targets` (the remainder one more each
    to the first ones, so a small fuzz is not cut short by the number of subjects), and report
    (module doc)."""
    rng_seed = random.randrange(2**32) if rng_seed is None else rng_seed
    tgts = targets(subjects, engine_id)
    per, extra = divmod(cases, len(tgts))
    work = [
        (t, payload, hdrs)
        for i, t in enumerate(tgts)
        for payload, hdrs in await asyncio.to_thread(
            draw_cases, t, max(1, per + (i < extra)), rng_seed + i
        )
    ]
    random.Random(rng_seed).shuffle(work)
    report = FuzzReport()
    js = nc.jetstream()
    streams = await _Streams(nc).start()
    sem = asyncio.Semaphore(concurrency)

    async def run(t: Target, payload: bytes, hdrs: Any) -> None:
        async with sem:
            try:
                problem, internal = await _one(nc, js, streams, t, payload, hdrs, timeout_s)
            except Exception as exc:
                problem, internal = f"send failed: {exc!r}", False
            report.record(t, payload, problem, internal)
            if on_progress is not None and report.cases % 100 == 0:
                maybe = on_progress(report)
                if maybe is not None:
                    await maybe

    try:
        await asyncio.gather(*(run(t, pl, h) for t, pl, h in work))
    finally:
        await streams.stop()
    return report


async def still_serving(nc: Any, subjects: p.Subjects, timeout_s: float = 30.0) -> list[str]:
    """Good requests on the client subjects after a fuzz: what did not get a right answer."""
    wrong: list[str] = []
    program = f"fuzz-check-{random.randrange(10**9)}"
    streams = await _Streams(nc).start()
    try:
        call = p.CallRequest(
            program_id=program, prompt="still there?", sampling=p.SamplingParams(max_tokens=3)
        )
        got = await streams.submit(subjects.submit, p.encode(call), None, timeout_s)
        replies = [p.CALL_REPLY.validate_json(d) for d in got]
        if not any(isinstance(r, p.CallFinal) for r in replies):
            wrong.append(f"call submit: {replies}")
    finally:
        await streams.stop()
    for subject, msg, reply in (
        (subjects.program_open, p.ProgramOpen(program_id=f"{program}-b"), p.ProgramReply),
        (subjects.cancel, p.CallCancel(call_id="fuzz-check-unknown"), p.CallCancelReply),
        (subjects.program_close, p.ProgramClose(program_id=program), p.ProgramReply),
    ):
        try:
            answer = await nc.request(subject, p.encode(msg), timeout=timeout_s)
            reply.model_validate_json(answer.data)
        except Exception as exc:
            wrong.append(f"{subject}: {exc!r}")
    return wrong


def dumps(report: FuzzReport) -> str:
    return json.dumps(report.as_dict(), indent=2)
