"""What the engine tells the schedulers about its running calls: `ServiceReport`s.

The schedulers fold each call's attained service into Postgres and decide demotions from it, so
a report carries, per running call, its tokens, service units and run time; reports are
cumulative, so losing one loses nothing.
"""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime

from autellix.services.engine.call import EngineCall
from autellix.services.engine.state import RunnerState
from autellix.wire.protocol import CallProgress, ServiceReport, encode


class Reports(RunnerState):
    """`progress` / `progress_of` (what a report carries) and `publish_report`."""

    def progress(self, changed_only: bool = False) -> list[CallProgress]:
        """Progress of the running calls (only those whose service moved since the last
        report, with `changed_only`): what a ServiceReport carries."""
        return self.progress_of(list(self.running), changed_only)

    def progress_of(
        self, calls: list[EngineCall], changed_only: bool = False
    ) -> list[CallProgress]:
        now = time.monotonic()
        out = []
        for c in calls:
            service = c.service
            if changed_only and service <= c.reported:
                continue
            c.reported = service
            out.append(
                CallProgress(
                    call_id=c.call_id,
                    program_id=c.dispatch.program_id,
                    thread_id=c.dispatch.thread_id,
                    tokens=len(c.tokens),
                    running=c.state == "running",
                    service=service,
                    run_s=round(c.run_seconds(now), 6),
                )
            )
        return out

    async def publish_report(self, progress: list[CallProgress]) -> None:
        """One `ServiceReport` to the schedulers (at-most-once: reports are cumulative)."""
        if not progress:
            return
        report = ServiceReport(engine_id=self.engine_id, at=datetime.now(UTC), calls=progress)
        with contextlib.suppress(Exception):
            await self.nc.publish(self.subjects.reports, encode(report))
