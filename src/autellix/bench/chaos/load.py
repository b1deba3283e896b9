"""The steady load a chaos run keeps up: mixed, streamed, multi-call programs from the Python
client, with its recovery on (resends before acceptance, resumes from Postgres after).

Closed loop on purpose: `programs` workers each run one program after another, so a stall
anywhere (a dead engine holding calls, a bus outage) shows as fewer completions per second,
which is what the recovery time is read from. Every call carries a client call id of our own
(`<program>:<n>`) so it can be found in Postgres afterwards, and so a call the client gave up on
before it was accepted can be submitted again under the same key, as a careful caller would: the
frontend then answers the call that already ran instead of running it twice.

Program shapes (drawn per program from a seeded RNG):

* `chain`: three calls one after another in one thread;
* `fanout`: two calls at once in two threads, then a join call naming both as parents;
* `long`: one call with a longer output.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass, field
from typing import Any

from autellix.client import Client
from autellix.client.errors import CallFailed, CallTimeout
from autellix.client.results import CallResult
from autellix.wire.protocol import TokenDelta

__all__ = ["CallRecord", "LoadDriver", "ProgramShape"]

SHAPES = ("chain", "fanout", "long")


@dataclass
class CallRecord:
    """One call as its caller saw it, from the first submit to its answer (or none)."""

    program_id: str
    key: str  # the client call id
    shape: str
    submitted: float  # time.monotonic() of the first submit
    ended: float | None = None
    #: completed | error (a typed CallError after acceptance) | timeout (no answer within the
    #: call's deadline) | exception (anything else) | pending (still open when the run ended)
    outcome: str = "pending"
    error_code: str | None = None
    error_message: str = ""
    call_id: str | None = None
    submits: int = 0  # 1 + resubmits under the same key after "not accepted"
    duplicate_reply: bool = False  # a resubmit found the call already there
    streamed: list[int] = field(default_factory=list)  # token ids of the deltas, in order
    final: list[int] | None = None  # token ids of the (first) result
    results: int = 0  # results the stream yielded (more than one is an answer twice)
    text: str | None = None


@dataclass(frozen=True)
class ProgramShape:
    """One program's plan: its shape and the output length of each call."""

    shape: str
    max_tokens: tuple[int, ...]

    @classmethod
    def draw(cls, rng: random.Random) -> ProgramShape:
        shape = rng.choice(SHAPES)
        if shape == "chain":
            return cls(shape, tuple(rng.randint(8, 32) for _ in range(3)))
        if shape == "fanout":
            return cls(shape, tuple(rng.randint(8, 24) for _ in range(3)))
        return cls(shape, (rng.randint(48, 96),))


class LoadDriver:
    """`programs` workers running programs until `stop` is set; every call is recorded."""

    def __init__(
        self,
        client: Client,
        *,
        programs: int,
        tag: str,
        seed: int = 0,
        call_timeout_s: float = 60.0,
    ) -> None:
        self.client = client
        self.programs = programs
        self.tag = tag
        self.rng = random.Random(seed)
        self.call_timeout_s = call_timeout_s
        self.records: list[CallRecord] = []
        self.opened = 0
        self.open_refused = 0  # program opens that got an error (a part was down): retried
        self._n = 0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def program_prefix(self) -> str:
        """Every program id of this run starts with it (how Postgres rows are found)."""
        return f"chaos-{self.tag}-"

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._worker()) for _ in range(self.programs)]

    async def stop(self, drain_s: float) -> None:
        """No new programs; wait up to `drain_s` for the open calls to end, then give up."""
        self._stop.set()
        if not self._tasks:
            return
        _, late = await asyncio.wait(self._tasks, timeout=drain_s)
        for task in late:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task

    def completions(self) -> list[float]:
        """When each completed call ended (time.monotonic()), sorted."""
        return sorted(r.ended for r in self.records if r.outcome == "completed" and r.ended)

    # ------------------------------------------------------------------ programs

    async def _worker(self) -> None:
        while not self._stop.is_set():
            self._n += 1
            program_id = f"{self.program_prefix}{self._n}"
            plan = ProgramShape.draw(self.rng)
            try:
                await self._program(program_id, plan)
            except CallFailed:
                self.open_refused += 1
                await asyncio.sleep(0.2)  # a part is down: a program of its own retries
            except asyncio.CancelledError:
                raise
            except Exception:  # the connection is down or closing: try again shortly
                self.open_refused += 1
                await asyncio.sleep(0.2)

    async def _program(self, program_id: str, plan: ProgramShape) -> None:
        prog = self.client.program(program_id)
        await prog.open()
        self.opened += 1
        try:
            if plan.shape == "fanout":
                a, b = await asyncio.gather(
                    self._call(prog.thread("a"), program_id, 0, plan),
                    self._call(prog.thread("b"), program_id, 1, plan),
                )
                if a is not None and b is not None:
                    await self._call(prog, program_id, 2, plan, parents=[a, b])
            else:
                for n in range(len(plan.max_tokens)):
                    if await self._call(prog, program_id, n, plan) is None:
                        break
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(prog.close(), 5.0)

    async def _call(
        self,
        caller: Any,
        program_id: str,
        n: int,
        plan: ProgramShape,
        parents: list[CallResult] | None = None,
    ) -> CallResult | None:
        """One streamed call, resubmitted under its key while no frontend has accepted it."""
        rec = CallRecord(program_id, f"{program_id}:{n}", plan.shape, time.monotonic())
        self.records.append(rec)
        deadline = rec.submitted + self.call_timeout_s
        while True:
            rec.submits += 1
            rec.streamed.clear()
            try:
                result = await self._stream(caller, rec, plan.max_tokens[n], parents, deadline)
            except CallTimeout as exc:
                return self._end(rec, "timeout", exc)
            except CallFailed as exc:
                if exc.call_id is None and exc.retryable and time.monotonic() + 0.5 < deadline:
                    await asyncio.sleep(0.5)  # not accepted (yet): the same key again
                    continue
                return self._end(rec, "error", exc)
            except asyncio.CancelledError:
                rec.ended = None
                raise
            except Exception as exc:
                return self._end(rec, "exception", exc)
            rec.ended = time.monotonic()
            rec.outcome = "completed"
            return result

    async def _stream(
        self,
        caller: Any,
        rec: CallRecord,
        max_tokens: int,
        parents: list[CallResult] | None,
        deadline: float,
    ) -> CallResult:
        result: CallResult | None = None
        async for item in caller.stream(
            f"chaos call {rec.key}: say something",
            max_tokens=max_tokens,
            client_call_id=rec.key,
            parents=parents,
            timeout=max(0.5, deadline - time.monotonic()),
        ):
            if isinstance(item, TokenDelta):
                rec.streamed.extend(item.token_ids)
            elif isinstance(item, CallResult):
                rec.results += 1
                if result is None:
                    result = item
                    rec.final = list(item.token_ids)
                    rec.call_id = item.call_id
                    rec.text = item.text
                    rec.duplicate_reply = item.duplicate
        assert result is not None  # the stream ends with its result or raises
        return result

    @staticmethod
    def _end(rec: CallRecord, outcome: str, exc: BaseException) -> None:
        rec.ended = time.monotonic()
        rec.outcome = outcome
        if isinstance(exc, CallFailed):
            rec.error_code = exc.code.value
            rec.call_id = rec.call_id or exc.call_id
            rec.error_message = exc.error.message[:200]
        else:
            rec.error_code = type(exc).__name__
            rec.error_message = str(exc)[:200]
        return None
