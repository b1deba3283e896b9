"""The scheduler's metrics: decisions per level, calls failed for want of an engine, calls of
lost engines re-queued.

Why here: a scheduler replica is the one place that knows it decided a call's level and engine,
that no engine was left to take a call, and (the replica running the reaper) that an engine's
calls were taken back from it. OpenTelemetry instruments, created once per process (the API is
a no-op until `setup_tracing` installs an SDK); names in docs/observability.md.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from autellix.runtime import telemetry


class SchedulerMetrics:
    def __init__(self) -> None:
        m = telemetry.meter("autellix.scheduler")
        self.decisions = telemetry.counter(
            m,
            "autellix.scheduler.decisions",
            "calls dispatched to an engine, by the MLFQ level decided",
        )
        self.failed = telemetry.failed_calls_counter(m)
        self.requeued: Any = telemetry.counter(
            m,
            "autellix.scheduler.requeued_calls",
            "active calls of engines marked down, sent back to be scheduled again",
        )
        # a series from the start: "no engine lost a call" reads 0, not "no data"
        self.requeued.add(0)

    def decided(self, levels: Iterable[int]) -> None:
        """One batch's dispatched decisions (one add per level, not per call)."""
        for level, n in Counter(levels).items():
            self.decisions.add(n, telemetry.attrs(level=level))

    def call_failed(self, code: str) -> None:
        self.failed.add(1, {"error.type": code})

    def calls_requeued(self, n: int) -> None:
        self.requeued.add(n)


_instance: SchedulerMetrics | None = None


def scheduler_metrics() -> SchedulerMetrics:
    global _instance
    if _instance is None:
        _instance = SchedulerMetrics()
    return _instance
