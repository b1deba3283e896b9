"""Service accounting: fold engines' progress reports into Postgres, demote calls at their quantum.

Engines publish a `ServiceReport` (every running call's attained service and run time so far) at
a bounded rate (`--report-interval`, 0.1 s by default) on `Subjects.reports`. Schedulers take
them in the NATS queue group `schedulers` — each report reaches one replica — and fold what
arrived during the last `fold_interval_s` in one transaction (`store.progress.fold_progress`):
call service (monotone), program `attained` and thread service (atomic increments). So the
database sees a few statements per fold per replica, never one per token.

Reports are cumulative snapshots, so at-most-once delivery is enough: a lost report is made up
by the next one, and the engine's `finish_call` writes the authoritative final numbers.

**Demotion** is decided here: after folding, each call's level under the policy
(`LivePolicy.level_after(rank_base + service)`, i.e. `call_rank` of its new value) is compared
with its recorded level; a call whose value crossed its queue's upper bound (its quantum is used
up) is moved down with a conditional update (`change_levels`: only if still at the old level, so
two replicas never demote twice) that writes a `demote` event and bumps its `control_seq`; then
a `Control(set_level, seq)` tells its engine, which re-plans its batch (and may preempt it for a
higher-level call that waits).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from autellix.services.scheduler.decide import LivePolicy
from autellix.store.levels import LevelChange, LevelChanged, change_levels
from autellix.store.progress import FoldedCall, Progress, fold_progress
from autellix.wire.protocol import Control, ServiceReport, Subjects, encode

REPORTS_QUEUE_GROUP = "schedulers"


async def send_controls(
    nc: Any, subjects: Subjects, changed: Sequence[LevelChanged], reason: str
) -> None:
    """Tell engines about recorded level changes (Control carries the call's control_seq)."""
    for c in changed:
        ctl = Control(
            action="set_level",
            call_id=c.id,
            level=c.level,
            reason=reason,
            seq=c.control_seq,
            tiebreak=c.tiebreak,
        )
        await nc.publish(subjects.control(c.engine_id), encode(ctl))


class ServiceAccounting:
    def __init__(
        self,
        *,
        pool: Any,
        nc: Any,
        subjects: Subjects,
        policy: LivePolicy,
        actor: str,
        log: Any,
        fold_interval_s: float = 0.05,
    ) -> None:
        self.pool = pool
        self.nc = nc
        self.subjects = subjects
        self.policy = policy
        self.actor = actor
        self.log = log
        self.fold_interval_s = fold_interval_s
        self._pending: list[Progress] = []
        self._wake = asyncio.Event()
        self._sub: Any = None
        self._gittins_task: asyncio.Task[None] | None = None
        self.reports = 0
        self.folds = 0
        self.demotions = 0

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(
            self.subjects.reports, queue=REPORTS_QUEUE_GROUP, cb=self._on_report
        )
        table = self.policy.gittins
        if table is not None:  # gittins learns from the service finished programs attained
            self._gittins_task = asyncio.create_task(table.run(self.pool, self.log))

    async def stop(self) -> None:
        if self._gittins_task is not None:
            self._gittins_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._gittins_task
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
        with contextlib.suppress(Exception):
            await self.fold_pending()

    async def _on_report(self, msg: Any) -> None:
        try:
            report = ServiceReport.model_validate_json(msg.data)
        except ValidationError as exc:
            self.log.warning("invalid service report ignored", error=str(exc)[:300])
            return
        self.reports += 1
        for c in report.calls:
            if c.service is None:
                continue  # an engine that does not report service: folded at finish only
            self._pending.append(
                Progress(
                    call_id=c.call_id,
                    engine_id=report.engine_id,
                    service=c.service,
                    run_s=c.run_s or 0.0,
                    program_id=c.program_id,
                )
            )
        self._wake.set()

    async def run(self) -> None:
        last = 0.0
        while True:
            await self._wake.wait()
            self._wake.clear()
            wait = last + self.fold_interval_s - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            last = time.monotonic()
            try:
                await self.fold_pending()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the next reports carry the same (cumulative) progress
                self.log.warning("service fold failed", error=repr(exc))

    async def fold_pending(self) -> list[LevelChanged]:
        items, self._pending = self._pending, []
        if not items:
            return []
        async with self.pool.acquire() as conn:
            folded = await _retry(fold_progress, conn, items)
        self.folds += 1
        return await self.demote(folded)

    async def demote(self, folded: Sequence[FoldedCall]) -> list[LevelChanged]:
        """Record and send the demotions the folded progress calls for (see module doc)."""
        changes = []
        bounds = self.policy.policy.mlfq.boundaries or ()
        for f in folded:
            level = self.policy.level_after(
                rank_base=f.rank_base, service=f.service, aged=f.aged, current=f.level
            )
            if level > f.level:
                value = f.rank_base + f.service
                crossed = bounds[f.level] if f.level < len(bounds) else value
                changes.append(
                    LevelChange(
                        call_id=f.id,
                        from_level=f.level,
                        to_level=level,
                        reason=(
                            f"quantum used: value {value:g} reached level {f.level}'s upper "
                            f"bound {crossed:g} -> level {level}"
                        ),
                        value=value,
                    )
                )
        if not changes:
            return []
        changed = await change_levels(self.pool, changes, kind="demote", actor=self.actor)
        await send_controls(self.nc, self.subjects, changed, "demoted: quantum used")
        self.demotions += len(changed)
        return changed


async def _retry(fn: Any, *args: Any, attempts: int = 3) -> Any:
    """Retry a fold that lost a deadlock/serialization race (it is idempotent)."""
    import asyncpg

    for i in range(attempts):
        try:
            return await fn(*args)
        except (asyncpg.DeadlockDetectedError, asyncpg.SerializationError):
            if i == attempts - 1:
                raise
            await asyncio.sleep(0.01 * (i + 1))
    raise AssertionError("unreachable")
