"""A steady load of mixed programs over NATS, every reply recorded per inbox.

The client side of the cluster benchmark and of the NATS failover test (tests/stack/
test_nats_cluster.py): calls are published at a fixed rate, each with its own reply inbox, and
everything that comes back is kept, so a run can say exactly what happened to each call:

* **accepted**: the frontend said so (or the call ended, which implies it);
* **completed**: exactly one `CallFinal`; **failed_explicitly**: a `CallError` instead;
* **lost**: nothing terminal ever came; **duplicated**: two or more terminal messages.

Core NATS messages in flight through a killed server are gone (at most once by design), so with
`resubmit_after_s` the load does what a careful client does: a call silent for that long is
submitted again under the same `client_call_id` on the same inbox, which the frontend answers
with the same call (and its stored final, if it already ended).

The programs are mixed: three threads each, prompts of 12 to 31 tokens, 10 to 39 output tokens
(`mixed_request`), so calls of one program overlap and their lengths differ.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from autellix.wire.protocol import (
    CallAccepted,
    CallError,
    CallFinal,
    CallRequest,
    SamplingParams,
    Subjects,
    encode,
)
from autellix.wire.replies import CALL_REPLY


def mixed_request(i: int, prefix: str = "mix", max_tokens: int | None = None) -> CallRequest:
    """The i-th call of the mixed load: program i // 3, thread i % 3 (`max_tokens` fixes the
    output length; default 10 + 7i mod 30)."""
    return CallRequest(
        program_id=f"{prefix}-{i // 3}",
        thread_id=f"t{i % 3}",
        client_call_id=f"{prefix}-call-{i}",
        prompt_token_ids=[(11 * i + k) % 900 + 1 for k in range(12 + i % 20)],
        sampling=SamplingParams(max_tokens=max_tokens or 10 + (i * 7) % 30),
    )


@dataclass
class LoadCall:
    token: str
    request: CallRequest
    submitted: float = field(default_factory=time.monotonic)
    accepted: bool = False
    finished: float | None = None
    terminal: list[CallFinal | CallError] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def latency_s(self) -> float | None:
        return None if self.finished is None else self.finished - self.submitted


@dataclass(frozen=True)
class Outcome:
    """What happened to the calls of one load (see the module docstring)."""

    submitted: int
    accepted: int
    completed: int
    failed_explicitly: int
    lost: int
    duplicated: int
    resubmitted: int

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class SteadyLoad:
    """Submit calls, record every reply, optionally resubmit silent calls."""

    def __init__(
        self, nc: Any, subjects: Subjects, *, resubmit_after_s: float | None = None
    ) -> None:
        self.nc = nc
        self.subjects = subjects
        self.resubmit_after_s = resubmit_after_s
        self.calls: dict[str, LoadCall] = {}
        self.heard: dict[str, float] = {}
        self.resubmitted = 0
        self._n = 0
        self._prefix = nc.new_inbox()
        self._sub: Any = None
        self._resender: asyncio.Task[None] | None = None

    async def start(self) -> SteadyLoad:
        self._sub = await self.nc.subscribe(f"{self._prefix}.*", cb=self._on_msg)
        if self.resubmit_after_s is not None:
            self._resender = asyncio.create_task(self._resubmit_silent(self.resubmit_after_s))
        return self

    async def stop(self) -> None:
        if self._resender is not None:
            self._resender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._resender
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()

    async def _on_msg(self, msg: Any) -> None:
        token = msg.subject.rsplit(".", 1)[-1]
        self.heard[token] = time.monotonic()
        call = self.calls.get(token)
        if call is None:
            return
        try:
            reply = CALL_REPLY.validate_json(msg.data)
        except ValueError:
            return  # not a reply (counted as nothing heard)
        if isinstance(reply, CallAccepted):
            call.accepted = True
        elif isinstance(reply, CallFinal | CallError):
            call.accepted = True
            call.terminal.append(reply)
            if not call.done.is_set():
                call.finished = time.monotonic()
                call.done.set()

    async def submit(self, request: CallRequest) -> LoadCall:
        self._n += 1
        token = f"c{self._n}"
        call = LoadCall(token=token, request=request)
        self.calls[token] = call
        await self.nc.publish(
            self.subjects.submit, encode(request), reply=f"{self._prefix}.{token}"
        )
        return call

    async def _resubmit_silent(self, silence_s: float) -> None:
        while True:
            now = time.monotonic()
            for call in list(self.calls.values()):
                last = max(self.heard.get(call.token, call.submitted), call.submitted)
                if not call.done.is_set() and now - last > silence_s:
                    self.heard[call.token] = now  # the next try after another silence_s
                    with contextlib.suppress(Exception):
                        await self.nc.publish(
                            self.subjects.submit,
                            encode(call.request),
                            reply=f"{self._prefix}.{call.token}",
                        )
                        self.resubmitted += 1
            await asyncio.sleep(0.2)

    async def run(
        self,
        rate_per_s: float,
        duration_s: float,
        make: Callable[[int], CallRequest],
        *,
        on_tick: Callable[[float], None] | None = None,
    ) -> list[LoadCall]:
        """Submit `make(i)` at `rate_per_s` for `duration_s` (deadline-paced, so a slow publish
        does not lower the rate); `on_tick(elapsed_s)` before each submission."""
        out: list[LoadCall] = []
        t0 = time.monotonic()
        i = 0
        while (elapsed := time.monotonic() - t0) < duration_s:
            if on_tick is not None:
                on_tick(elapsed)
            out.append(await self.submit(make(i)))
            i += 1
            await asyncio.sleep(max(0.0, t0 + i / rate_per_s - time.monotonic()))
        return out

    async def settle(self, calls: list[LoadCall], timeout_s: float, grace_s: float = 1.0) -> None:
        """Wait until every call ended (at most `timeout_s`), then `grace_s` more for late
        duplicates."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(c.done.wait() for c in calls)), timeout_s)
        await asyncio.sleep(grace_s)

    def outcome(self, calls: list[LoadCall]) -> Outcome:
        return Outcome(
            submitted=len(calls),
            accepted=sum(c.accepted for c in calls),
            completed=sum(
                1 for c in calls if len(c.terminal) == 1 and isinstance(c.terminal[0], CallFinal)
            ),
            failed_explicitly=sum(
                1 for c in calls if c.terminal and isinstance(c.terminal[0], CallError)
            ),
            lost=sum(1 for c in calls if not c.terminal),
            duplicated=sum(1 for c in calls if len(c.terminal) > 1),
            resubmitted=self.resubmitted,
        )
