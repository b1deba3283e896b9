"""Background duties of the scheduler replicas: the reaper and the reconciler.

Exactly one replica does them at a time: each pass runs in a transaction that first takes
`pg_try_advisory_xact_lock(<key>)`; a replica that does not get it skips the pass. The lock is
released at commit, so if the replica holding it dies, the next pass of another replica takes
over (no lease to expire).

* **Reaper**: engines whose Postgres heartbeat is older than `engine_stale_s` are marked `down`;
  every active call (dispatched / running / preempted) of a down engine goes back to `queued`
  (attempts kept, event `requeue`) and, after commit, a `ScheduleCall` with the next attempt
  number is published, so a scheduler dispatches it to another engine as attempt + 1. If the
  lost engine comes back it owns nothing any more: its updates match no row, and the stale
  dispatch messages it still finds in the stream are dropped. (They are not purged here: a
  purge could race with a fresh dispatch to an engine that only looked lost; the stream's
  max_age bounds them.)
* **Reconciler**: a call `queued` with no event for `reconcile_after_s` may have no ScheduleCall
  in the stream (the frontend's publish failed after its insert, or a reaper died between its
  commit and its publish). It is published again; the message id names the attempt, so if the
  original is still in the stream the duplicate window drops the copy. Each republish writes a
  `republish` event, so a call waiting for an engine is republished at most once per period.

Crash of the replica between the commit and the publishes: the calls are `queued` in Postgres,
so the reconciler (on any replica) publishes them `reconcile_after_s` later.
"""

from __future__ import annotations

import asyncio
import zlib
from typing import Any

from nats.js import JetStreamContext

from autellix import bus
from autellix.protocol import Subjects
from autellix.store import queries as q


class Maintenance:
    def __init__(
        self,
        *,
        pool: Any,
        js: JetStreamContext,
        subjects: Subjects,
        actor: str,
        log: Any,
        interval_s: float = 1.0,
        engine_stale_s: float = 5.0,
        reconcile_after_s: float = 30.0,
    ) -> None:
        self.pool = pool
        self.js = js
        self.subjects = subjects
        self.actor = actor
        self.log = log
        self.interval_s = interval_s
        self.engine_stale_s = engine_stale_s
        self.reconcile_after_s = reconcile_after_s
        self.lock_key = zlib.crc32(f"autellix-maintenance:{subjects.namespace}".encode())
        self.requeued = 0
        self.reconciled = 0

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.pass_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.log.warning("maintenance pass failed", error=repr(exc))

    async def pass_once(self) -> bool:
        """One reaper + reconciler pass; False when another replica holds the lock."""
        async with self.pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", self.lock_key):
                return False
            lost = await q.mark_stale_engines_down(conn, stale_after_s=self.engine_stale_s)
            targets = sorted(set(lost) | set(await q.down_engines_with_calls(conn)))
            requeued = (
                await q.requeue_engine_calls(
                    conn, targets, actor=self.actor, reason="engine lost (heartbeat stale)"
                )
                if targets
                else []
            )
            stale = await q.stale_queued_calls(
                conn, older_than_s=self.reconcile_after_s, actor=self.actor
            )
        if lost:
            self.log.warning("engines lost (heartbeat stale)", engines=lost)
        if requeued:
            sent = await bus.publish_schedule(self.js, self.subjects, requeued, reason="redispatch")
            self.requeued += sent
            self.log.warning("calls of lost engines re-queued", calls=len(requeued), published=sent)
        if stale:
            sent = await bus.publish_schedule(self.js, self.subjects, stale, reason="reconcile")
            self.reconciled += sent
            self.log.info("queued calls republished", calls=len(stale), published=sent)
        return True
