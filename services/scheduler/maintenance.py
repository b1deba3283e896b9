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
  A *suspected* engine (`suspect`: a dispatcher found nobody subscribed to its direct subject,
  i.e. its process is gone) is reaped sooner, once its heartbeat is `suspect_stale_s` old (2 s,
  one heartbeat missed, instead of `engine_stale_s`): both signals at once, so an engine that
  only lost its NATS connection for a moment (it keeps writing heartbeats) is not reaped. The
  reaping itself is the same, so the exactly-once argument is the reaper's: the calls go back
  to `queued` with their attempt kept, and whatever the old incarnation does later matches no
  row. A suspicion not confirmed within `engine_stale_s` is dropped.
* **Reconciler**: a call `queued` with no event for `reconcile_after_s` may have no ScheduleCall
  in the stream (the frontend's publish failed after its insert, or a reaper died between its
  commit and its publish). It is published again; the message id names the attempt, so if the
  original is still in the stream the duplicate window drops the copy. Each republish writes a
  `republish` event, so a call waiting for an engine is republished at most once per period.

Crash of the replica between the commit and the publishes: the calls are `queued` in Postgres,
so the reconciler (on any replica) publishes them `reconcile_after_s` later.

Two more duties for live scheduling, each also run by one replica at a time (own lock key):

* **Anti-starvation** every `starvation_interval_s`: the calls waiting at engines below the top
  queue (and, with the age rule, waiting calls of old programs) are checked with the policy
  core's `should_promote` / `is_aged` (`LivePolicy.promotion`); a promoted call moves to the top
  queue with a fresh quantum (`change_levels`, conditional, a `promote` event with the ratio
  that fired), and its engine gets a `Control(set_level, seq)`.
* **Program idle TTL** every `ttl_check_s`: open programs with no active call and no activity
  for `program_idle_ttl_s` become `expired` (their rows keep the final statistics).
"""

from __future__ import annotations

import asyncio
import time
import zlib
from typing import Any

from nats.js import JetStreamContext

from autellix.services.scheduler.accounting import send_controls
from autellix.services.scheduler.decide import LivePolicy
from autellix.services.scheduler.metrics import scheduler_metrics
from autellix.store.engines import (
    down_engines_with_calls,
    mark_engines_down_if_stale,
    mark_stale_engines_down,
)
from autellix.store.levels import change_levels, starvation_candidates
from autellix.store.programs import expire_idle_programs
from autellix.store.requeue import requeue_engine_calls, stale_queued_calls
from autellix.transport import bus
from autellix.wire.protocol import Subjects


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
        nc: Any = None,
        policy: LivePolicy | None = None,
        starvation_interval_s: float = 0.5,
        program_idle_ttl_s: float = 600.0,
        ttl_check_s: float | None = None,
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
        self.starvation_key = zlib.crc32(f"autellix-starvation:{subjects.namespace}".encode())
        self.nc = nc
        self.policy = policy
        self.starvation_interval_s = starvation_interval_s
        self.program_idle_ttl_s = program_idle_ttl_s
        self.ttl_check_s = (
            ttl_check_s
            if ttl_check_s is not None
            else min(30.0, max(0.5, program_idle_ttl_s / 10.0))
        )
        self.suspect_stale_s = min(2.0, engine_stale_s)
        self._suspects: dict[str, float] = {}  # engine id -> time.monotonic() first suspected
        self.requeued = 0
        self.metrics = scheduler_metrics()  # its requeued-calls series starts at 0 here
        self.reconciled = 0
        self.promoted = 0
        self.expired = 0

    async def run(self) -> None:
        loops = [self._every(self.interval_s, self.pass_once, "maintenance")]
        if (
            self.policy is not None
            and self.nc is not None
            and self.policy.policy.starvation.enabled
        ):
            loops.append(
                self._every(self.starvation_interval_s, self.starvation_once, "anti-starvation")
            )
        if self.program_idle_ttl_s > 0:
            loops.append(self._every(self.ttl_check_s, self.expire_once, "program expiry"))
        await asyncio.gather(*loops)

    async def _every(self, interval_s: float, fn: Any, what: str) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await fn()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.log.warning(f"{what} pass failed", error=repr(exc))

    async def starvation_once(self) -> int:
        """One anti-starvation pass (see module docstring); returns calls promoted."""
        assert self.policy is not None
        async with self.pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", self.starvation_key):
                return 0
            # the youngest age either sticky rule (age, slowdown) can fire at
            min_age = self.policy.policy.starvation.min_aging_age_s
            rows = await starvation_candidates(conn, age_s=min_age)
            changes = [c for r in rows if (c := self.policy.promotion(r)) is not None]
            changed = await change_levels(conn, changes, kind="promote", actor=self.actor)
        if changed:
            await send_controls(self.nc, self.subjects, changed, "promoted: anti-starvation")
            self.promoted += len(changed)
            self.log.info("calls promoted (anti-starvation)", calls=len(changed))
        return len(changed)

    async def expire_once(self) -> list[str]:
        expired = await expire_idle_programs(self.pool, idle_s=self.program_idle_ttl_s)
        if expired:
            self.expired += len(expired)
            self.log.info("idle programs expired", programs=len(expired))
        return expired

    def suspect(self, engine_id: str) -> None:
        """A dispatcher found `engine_id`'s direct subject without a subscriber: reap it at the
        next pass if its heartbeat has also stopped (module docstring)."""
        self._suspects.setdefault(engine_id, time.monotonic())

    def _suspected(self) -> list[str]:
        cutoff = time.monotonic() - self.engine_stale_s
        for engine_id, since in list(self._suspects.items()):
            if since < cutoff:
                del self._suspects[engine_id]  # the plain reaper decides about it now
        return sorted(self._suspects)

    async def pass_once(self) -> bool:
        """One reaper + reconciler pass; False when another replica holds the lock."""
        async with self.pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", self.lock_key):
                return False
            lost = await mark_stale_engines_down(conn, stale_after_s=self.engine_stale_s)
            if suspects := self._suspected():
                lost += await mark_engines_down_if_stale(
                    conn, suspects, stale_after_s=self.suspect_stale_s
                )
                for engine_id in lost:
                    self._suspects.pop(engine_id, None)
            targets = sorted(set(lost) | set(await down_engines_with_calls(conn)))
            requeued = (
                await requeue_engine_calls(
                    conn, targets, actor=self.actor, reason="engine lost (heartbeat stale)"
                )
                if targets
                else []
            )
            stale = await stale_queued_calls(
                conn, older_than_s=self.reconcile_after_s, actor=self.actor
            )
        if lost:
            self.log.warning("engines lost (heartbeat stale)", engines=lost)
        if requeued:
            sent = await bus.publish_schedule(self.js, self.subjects, requeued, reason="redispatch")
            self.requeued += sent
            self.metrics.calls_requeued(sent)
            self.log.warning("calls of lost engines re-queued", calls=len(requeued), published=sent)
        if stale:
            sent = await bus.publish_schedule(self.js, self.subjects, stale, reason="reconcile")
            self.reconciled += sent
            self.log.info("queued calls republished", calls=len(stale), published=sent)
        return True
