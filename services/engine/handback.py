"""Giving calls back to the schedulers: orphans, drain on shutdown, and a dead backend.

A call handed back goes to `queued` in Postgres (attempt kept, streamed tokens saved first) and
is published to the schedulers again, so another engine resumes it where the caller's stream
stopped. That happens to: calls Postgres says this engine owns but it does not hold
(`sweep_orphans`), calls still here when a drain times out (`drain`), and every call when the
backend itself died (`_backend_died`; the service then exits non-zero).
"""

from __future__ import annotations

import asyncio
import contextlib

from autellix.backends.base import BackendError
from autellix.services.engine.call import EngineCall
from autellix.services.engine.state import RunnerState
from autellix.store.requeue import engine_active_calls, requeue_call
from autellix.store.running import save_progress
from autellix.transport import bus


class HandBack(RunnerState):
    """`_hand_back` and its three uses: `sweep_orphans`, `drain`, `_backend_died`."""

    async def _hand_back(self, calls: list[EngineCall], why: str) -> None:
        """Give calls back to the schedulers (queued, progress saved) for another engine."""
        rows = []
        for c in calls:
            if c.state == "running" and c.sent > c.saved:
                await save_progress(self.pool, self.engine_id, [c.progress()])
            row = await self._db(
                requeue_call,
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

    async def sweep_orphans(self, older_than_s: float = 30.0) -> int:
        """Hand back calls Postgres says this engine owns but it does not hold (a Dispatch lost
        in transit, a transition that failed for good): otherwise nobody would ever run them,
        since this engine is alive and the reaper only takes calls from lost engines."""
        rows = await engine_active_calls(self.pool, self.engine_id, older_than_s=older_than_s)
        known = {(c.call_id, c.attempts) for c in self.calls.values() if c.state != "done"}
        # a call finished or failed here whose transition never committed is an orphan too
        orphans = [r for r in rows if (r.id, r.attempts) not in known]
        handed = []
        for r in orphans:
            row = await requeue_call(
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

    async def _backend_died(self, call: EngineCall, error: BackendError) -> None:
        """The backend is gone, not just this request: hand the call back with its progress (another
        engine resumes it, the caller's stream continues by offset) instead of failing it, stop
        admitting, and tell the service, which drains the rest and exits non-zero."""
        self.closing = True
        if self.on_backend_dead is not None:
            self.on_backend_dead(error.message)
        await self._hand_back([call], f"engine backend died: {error.message}")
