"""JetStream publishing without a request/reply round trip per message ("async publish").

`js.publish` in nats-py is a request: a new inbox token, a future, an `asyncio.wait_for` (a task
and a timer) and a JSON-decoded PubAck, per message. Profiled, that was the largest part of a
scheduler replica's CPU when it dispatched a burst (`bench/overhead/README.md`). `AsyncPublisher`
does what nats.go's `PublishAsync` does: every message gets a reply subject under one inbox
prefix this process subscribes to once, the PubAcks resolve futures from that one subscription,
and a whole batch waits on one timeout. Guarantees are those of `bus.publish_js`: the message id
(`Nats-Msg-Id`) makes a retried publish a no-op inside the stream's duplicate window, and a
batch that is not fully acknowledged after `attempts` tries raises, so the caller does not ack
its own input (JetStream redelivers it and the publish is retried from Postgres' record).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nats.errors import NoRespondersError

from autellix.transport.direct import DirectGate


class PublishError(RuntimeError):
    """JetStream refused or did not acknowledge a publish."""


class NotTaken(RuntimeError):
    """A direct offer was answered `taken=false` (`autellix.transport.direct`)."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    subject: str
    payload: bytes
    msg_id: str
    headers: dict[str, str] | None = None
    #: core subject of a direct offer of this message (`offer`); the JetStream `subject` is
    #: where it goes when the offer is not taken
    direct_subject: str | None = None


class AsyncPublisher:
    def __init__(self, nc: Any, *, ack_wait_s: float = 2.0, attempts: int = 3) -> None:
        self.nc = nc
        self.ack_wait_s = ack_wait_s
        self.attempts = attempts
        self._prefix = nc.new_inbox()
        self._futs: dict[str, asyncio.Future[None]] = {}
        self._tokens = itertools.count()
        self._sub: Any = None
        self._lock = asyncio.Lock()
        #: direct offers by outcome: taken, and not taken by reason (timeout, no_responders, ...)
        self.offers: collections.Counter[str] = collections.Counter()

    async def start(self) -> None:
        """Subscribe to the PubAck inbox (idempotent; `publish` calls it if needed)."""
        async with self._lock:
            if self._sub is None:
                self._sub = await self.nc.subscribe(self._prefix + ".*", cb=self._on_ack)

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
        for fut in self._futs.values():
            if not fut.done():
                fut.cancel()
        self._futs.clear()

    async def _on_ack(self, msg: Any) -> None:
        fut = self._futs.pop(msg.subject.rpartition(".")[2], None)
        if fut is None or fut.done():
            return  # a late ack of a retried message
        status = msg.headers.get("Status") if msg.headers else None
        if status == "503":
            fut.set_exception(NoRespondersError())
            return
        try:
            ack = json.loads(msg.data)
        except ValueError:
            fut.set_exception(PublishError(f"bad PubAck: {msg.data[:200]!r}"))
            return
        if isinstance(ack, dict) and ack.get("type") == "direct_reply":
            if ack.get("taken") is True:
                fut.set_result(None)
            else:
                fut.set_exception(NotTaken(str(ack.get("reason") or "refused")))
        elif isinstance(ack, dict) and ack.get("error"):
            fut.set_exception(PublishError(f"JetStream refused the publish: {ack['error']}"))
        else:
            fut.set_result(None)

    async def publish(self, items: Sequence[Outgoing]) -> None:
        """Publish every item and wait until JetStream stored all of them (or raise)."""
        if self._sub is None:
            await self.start()
        todo = list(items)
        delay = 0.05
        for attempt in range(self.attempts):
            waiting = await self._send(todo, direct=False)
            done, pending = await asyncio.wait(waiting, timeout=self.ack_wait_s)
            failed: list[Outgoing] = [waiting[f] for f in pending]
            error: BaseException | None = None
            for f in pending:
                f.cancel()
            for f in done:
                exc = f.exception()
                if exc is None:
                    continue
                if isinstance(exc, NoRespondersError):
                    failed.append(waiting[f])  # stream not there (yet): retried like a timeout
                else:
                    error = exc
            self._forget(waiting)
            if error is not None:
                raise error
            if not failed:
                return
            todo = failed
            if attempt < self.attempts - 1:
                await asyncio.sleep(delay)
                delay *= 4
        raise PublishError(f"{len(todo)} JetStream publishes not acknowledged")

    async def offer(
        self, items: Sequence[Outgoing], timeout_s: float
    ) -> list[tuple[Outgoing, str]]:
        """Offer every item directly (core NATS request, `transport.direct`); return the ones not
        taken within `timeout_s` with the reason (busy, retry, draining, invalid, timeout,
        no_responders, error), for the caller to publish to JetStream. Never raises for a
        refusal, a timeout or a missing receiver: those are what the fallback is for."""
        if not items:
            return []
        if self._sub is None:
            await self.start()
        waiting = await self._send(items, direct=True)
        done, pending = await asyncio.wait(waiting, timeout=timeout_s)
        left: list[tuple[Outgoing, str]] = []
        for f in pending:
            f.cancel()
            left.append((waiting[f], "timeout"))
        for f in done:
            exc = f.exception()
            if exc is None:
                self.offers["taken"] += 1
            elif isinstance(exc, NotTaken):
                left.append((waiting[f], str(exc)))
            elif isinstance(exc, NoRespondersError):
                left.append((waiting[f], "no_responders"))
            else:
                left.append((waiting[f], "error"))
        for _, reason in left:
            self.offers[reason] += 1
        self._forget(waiting)
        return left

    async def deliver(
        self, items: Sequence[Outgoing], gate: DirectGate | None, timeout_s: float
    ) -> None:
        """Deliver every item: offered directly first to each receiver `gate` has open (None:
        no direct offers), the rest and whatever was not taken published to JetStream. Returns
        once each one is taken or stored; raises as `publish` does when JetStream does not
        store the rest (the caller then does not ack its own input)."""
        stored: list[Outgoing] = list(items)
        if gate is not None and stored:
            offer: list[Outgoing] = []
            stored = []
            for it in items:
                (offer if gate.open(it.direct_subject or "") else stored).append(it)
            for it, reason in await self.offer(offer, timeout_s):
                gate.note(it.direct_subject or "", reason)
                stored.append(it)
        if stored:
            await self.publish(stored)

    async def _send(
        self, items: Sequence[Outgoing], *, direct: bool
    ) -> dict[asyncio.Future[None], Outgoing]:
        """Publish each item with a reply subject under our inbox; the future its answer
        resolves. JetStream: to `subject` with its message id; direct: to `direct_subject`."""
        loop = asyncio.get_running_loop()
        waiting: dict[asyncio.Future[None], Outgoing] = {}
        for it in items:
            token = str(next(self._tokens))
            fut: asyncio.Future[None] = loop.create_future()
            self._futs[token] = fut
            waiting[fut] = it
            if direct:
                subject, hdrs = it.direct_subject or it.subject, it.headers
            else:
                subject, hdrs = it.subject, {**(it.headers or {}), "Nats-Msg-Id": it.msg_id}
            await self.nc.publish(
                subject, it.payload, reply=f"{self._prefix}.{token}", headers=hdrs
            )
        return waiting

    def _forget(self, waiting: dict[asyncio.Future[None], Outgoing]) -> None:
        if len(self._futs) > 4 * max(1, len(waiting)) + 1024:  # drop tokens of timed-out tries
            self._futs = {t: f for t, f in self._futs.items() if not f.done()}
