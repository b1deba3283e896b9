"""Direct hops: core NATS request/reply in front of the two JetStream queues, with fallback.

Why: a call crosses two JetStream work queues on its way (frontend → schedulers, scheduler →
engine). Each stores the message, acknowledges it and delivers it through a pull consumer; on
this 2-core machine that is ~0.45 ms of latency and ~0.7 ms of CPU per call for the two
(`bench/overhead/floor.py`: the same path with no logic measures 2.8 ms p50 through JetStream,
1.9-2.3 ms through core NATS). When a receiver is there and has room, that storage buys nothing:
the receiver acts at once, and Postgres already records everything it does.

So the sender first *offers* the message on a core subject (`Subjects.sched_direct`, a queue
group of all scheduler replicas; `Subjects.dispatch_direct(engine)`). The receiver feeds it into
the same code as a JetStream message (`DirectMsg` looks like one) and answers `DirectReply`:

* `taken=true` where it would have **acked** the JetStream message: the scheduler has recorded
  and delivered the Dispatch (or found nothing to do); the engine holds the call in its queues.
* `taken=false` where it would have **nak'ed** (no engine yet, a Postgres hiccup), or at once
  when it is busy (a backlog: the durable queue keeps order and bounds memory) or draining.

Anything but `taken=true` within `timeout_s` (also "no responders": no receiver subscribed)
makes the sender publish the same message to the JetStream subject with the usual message id,
exactly as without this module. That is safe in every case, because a direct offer is only an
earlier delivery of a message the receivers already handle idempotently:

* not taken, or the receiver crashed before answering → the JetStream copy is the only one
  that counts; the receiver's partial work is what a crash before the ack leaves today (the
  scheduler's conditional transition, the engine's (call, attempt) dedupe).
* taken but the answer was late or lost → the JetStream copy is a duplicate: the scheduler
  finds the call `dispatched` and republishes the same Dispatch id (JetStream drops it), an
  engine drops a (call, attempt) it already holds.
* taken, then the receiver dies → as after a JetStream ack: the call is in Postgres as queued
  (the reconciler republishes it) or dispatched to a dead engine (the reaper re-dispatches).

`AUTELLIX_DIRECT_HOPS=off` makes senders skip the offer (receivers always listen): every call
then takes the JetStream path, as `autellix bench overhead --direct-hops both` compares.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from autellix.runtime.settings import env_float
from autellix.wire.protocol import DirectReply, encode

ENV_DIRECT = "AUTELLIX_DIRECT_HOPS"
ENV_DIRECT_TIMEOUT = "AUTELLIX_DIRECT_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 1.0

_TAKEN = encode(DirectReply(taken=True))


@functools.cache
def _refusal(reason: str) -> bytes:
    return encode(DirectReply(taken=False, reason=reason))


async def _answer(nc: Any, reply: str | None, payload: bytes) -> None:
    if reply:
        with contextlib.suppress(Exception):  # a lost answer is a timeout: the sender falls back
            await nc.publish(reply, payload)


def enabled(env: dict[str, str] | None = None) -> bool:
    """Whether senders offer messages directly first (default on; `off`, `0`, `false` = no)."""
    value = (env if env is not None else os.environ).get(ENV_DIRECT, "on").strip().lower()
    return value not in ("off", "0", "false", "no")


def timeout_s(log: Any = None, env: dict[str, str] | None = None) -> float:
    """How long a sender waits for `DirectReply` before it uses JetStream (default 1 s); a
    value that is not a positive number is logged on `log` and the default used."""
    return env_float(ENV_DIRECT_TIMEOUT, DEFAULT_TIMEOUT_S, log, positive=True, env=env)


#: how long a sender stops offering to a receiver after each kind of "not taken" (seconds)
PAUSE_S = {"busy": 0.25, "draining": 2.0, "no_responders": 1.0, "timeout": 1.0}


@dataclass
class DirectGate:
    """Per-receiver pause after a refusal, so a sender under a burst does not pay an offer and
    a refusal for every message before the JetStream publish it ends up making anyway.

    A receiver that said busy, draining, or did not answer is not offered anything for
    `PAUSE_S[reason]`; "retry" and "invalid" are about one message and pause nothing."""

    pauses: dict[str, float] = field(default_factory=dict)  # receiver key -> monotonic until
    skipped: int = 0
    #: receivers that answered "no responders" since `take_gone`: nobody subscribes there (a
    #: dead process), which a sender may act on sooner than the receiver's heartbeats expire
    gone: set[str] = field(default_factory=set)

    def open(self, key: str) -> bool:
        until = self.pauses.get(key)
        if until is None:
            return True
        if time.monotonic() >= until:
            del self.pauses[key]
            return True
        self.skipped += 1
        return False

    def note(self, key: str, reason: str) -> None:
        pause = PAUSE_S.get(reason)
        if pause is not None:
            self.pauses[key] = time.monotonic() + pause
        if reason == "no_responders":
            self.gone.add(key)

    def take_gone(self) -> set[str]:
        """The receivers found gone since the last call (and forget them)."""
        gone, self.gone = self.gone, set()
        return gone


@dataclass(frozen=True, slots=True)
class _Metadata:
    num_delivered: int
    timestamp: datetime


class DirectMsg:
    """A core NATS request that the receiving code treats like a JetStream message.

    `ack()` answers `taken`; `nak()` answers not taken (the sender falls back to JetStream);
    `term()` (an invalid message, dropped) answers not taken with reason `invalid`, so the
    sender's JetStream copy meets the same validation and is terminated there with a log line.
    Only the first answer is sent."""

    __slots__ = ("_msg", "_nc", "answered", "data", "headers", "metadata", "subject")

    def __init__(self, nc: Any, msg: Any) -> None:
        self._nc = nc
        self._msg = msg
        self.data: bytes = msg.data
        self.headers: dict[str, str] | None = msg.headers
        self.subject: str = msg.subject
        self.metadata = _Metadata(num_delivered=1, timestamp=datetime.now(UTC))
        self.answered = False

    async def _answer_once(self, payload: bytes) -> None:
        if not self.answered:
            self.answered = True
            await _answer(self._nc, self._msg.reply, payload)

    async def ack(self) -> None:
        await self._answer_once(_TAKEN)

    async def nak(self, delay: float | None = None) -> None:
        await self._answer_once(_refusal("retry"))

    async def term(self) -> None:
        await self._answer_once(_refusal("invalid"))

    async def refuse(self, reason: str) -> None:
        await self._answer_once(_refusal(reason))


async def refuse(nc: Any, msg: Any, reason: str) -> None:
    """Answer a direct offer `taken=false` without handling it (busy, draining)."""
    await _answer(nc, msg.reply, _refusal(reason))
