"""The engine's writes to Postgres: batched call starts, retries, and periodic progress saves.

Call starts (`running` transitions) are gathered for `start_batch_s` and written in one
statement while the generations already run (`_start_writer`); `_confirm_start` is how the other
jobs wait for "is this call ours". `_db` retries a conditional transition through a Postgres
outage. `save_progress_and_check` saves the tokens already streamed (so a call that moves to
another engine resumes rather than restarts) and drops calls this engine no longer owns.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from autellix.services.engine.call import EngineCall
from autellix.services.engine.state import RunnerState
from autellix.store.db import DB_UNAVAILABLE
from autellix.store.running import mark_running_many, owned_calls, save_progress

_DB_ATTEMPTS = 11  # sleeps 0.1, 0.2, ... capped at 4 s: about 22 s in all


class Ledger(RunnerState):
    """Start records, the retrying `_db`, and the periodic progress save."""

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
                owned = await self._db(mark_running_many, self.pool, self.engine_id, items)
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

    async def _db(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one of the call's conditional transitions, retrying through a Postgres outage
        (~22 s: a supervised Postgres restart with its backoff fits). They are idempotent, so a
        retry after an unclear failure is safe; if it still fails the error propagates and the
        orphan sweep hands the call back later."""
        delay = 0.1
        for attempt in range(_DB_ATTEMPTS):
            try:
                return await fn(*args, **kwargs)
            except DB_UNAVAILABLE as exc:
                self.db_outage = True
                if attempt == _DB_ATTEMPTS - 1:
                    raise
                self.log.warning("database unavailable, retrying", op=fn.__name__, error=repr(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 4.0)
        raise AssertionError("unreachable")

    async def _transition(self, fn: Any, call: EngineCall, **fields: Any) -> Any:
        """One conditional transition of `call` in Postgres (`fn`: a store function), through
        `_db`: the store writes it only while this engine still owns the attempt it was
        dispatched, so every transition names the call, its attempt and this engine."""
        return await self._db(
            fn,
            self.pool,
            call_id=call.call_id,
            attempts=call.attempts,
            engine_id=self.engine_id,
            **fields,
        )

    async def save_progress_and_check(self) -> None:
        """Persist streamed tokens of running calls; drop calls this engine no longer owns."""
        calls = [c for c in list(self.running) if c.state == "running" and c.sent > c.saved]
        items = [c.progress() for c in calls]
        if items:
            await save_progress(self.pool, self.engine_id, items)
            # what was written, not what has been sent since (the save took a round trip)
            for c, (_, _, toks, _) in zip(calls, items, strict=True):
                c.saved = max(c.saved, len(toks))
        now = time.monotonic()
        mine = [c for c in self.calls.values() if now - c.arrived > 2.0 and c.state != "done"]
        if not mine:
            return
        owned = await owned_calls(self.pool, self.engine_id, [c.call_id for c in mine])
        for c in mine:
            if owned.get(c.call_id) != c.attempts and c.state != "done":
                self._lose(c, "no longer owned (re-dispatched or finished elsewhere)")
