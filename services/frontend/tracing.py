"""Program-level telemetry of the frontend: a program's root span and the program metrics.

Why here: the frontend is where a program ends (`ProgramClose` over NATS, `POST
/v1/programs/{id}/close` or the end of an HTTP one-call program), so it is the one place that
knows a program's whole life. At close it

* records `autellix.program.duration` (s, open → close) and `autellix.program.latency_per_token`
  (s per output token: the paper's metric) as OTel histograms;
* emits the program's root span `autellix.program` when the program's calls used the *derived*
  program trace (no trace context from the client; see `autellix.runtime.telemetry`). A client that
  traces (the Python client) sends its own program span's context with the close request, and
  then owns the root: nothing is emitted here.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from autellix.runtime import telemetry
from autellix.services.frontend.metrics import PROGRAM_PER_TOKEN_S, PROGRAM_S, frontend_metrics
from autellix.wire.protocol import ProgramReply


class ProgramTelemetry:
    """Instruments are created once per process (OTel's API is a no-op until an SDK is set)."""

    def __init__(self) -> None:
        m = telemetry.meter("autellix.frontend")
        self.duration = m.create_histogram(
            "autellix.program.duration",
            unit="s",
            description="program open to close",
            explicit_bucket_boundaries_advisory=PROGRAM_S,
        )
        self.per_token = m.create_histogram(
            "autellix.program.latency_per_token",
            unit="s",
            description="program duration divided by its output tokens",
            explicit_bucket_boundaries_advisory=PROGRAM_PER_TOKEN_S,
        )
        self.calls = m.create_counter(
            "autellix.frontend.calls", unit="{call}", description="calls answered by the frontend"
        )

    def call_answered(self, via: str, outcome: str) -> None:
        """`outcome`: accepted, duplicate, or the protocol error code."""
        self.calls.add(1, {"autellix.via": via, "autellix.outcome": outcome})

    async def closed(
        self,
        pool: Any,
        reply: ProgramReply,
        carrier: Mapping[str, str] | None,
        *,
        started_ns: int | None = None,
    ) -> None:
        """Record a closed program. `started_ns` saves the look-up when the caller knows it."""
        end_ns = time.time_ns()
        if started_ns is None:
            created: datetime | None = await pool.fetchval(
                "SELECT created_at FROM programs WHERE id = $1", reply.program_id
            )
            if created is None:
                return
            started_ns = int(created.timestamp() * 1e9)
        duration_s = max(0.0, (end_ns - started_ns) / 1e9)
        stats = reply.stats
        self.duration.record(duration_s)
        if stats is not None and stats.completion_tokens > 0:
            self.per_token.record(duration_s / stats.completion_tokens)
        frontend_metrics().program_closed(duration_s, stats.completion_tokens if stats else 0)
        telemetry.emit_program_span(
            reply.program_id,
            started_ns,
            end_ns,
            carrier,
            status=reply.status,
            calls=stats.calls if stats else None,
            calls_finished=stats.calls_finished if stats else None,
            service=stats.service if stats else None,
            waiting_s=stats.waiting_s if stats else None,
            **{
                "gen_ai.usage.input_tokens": stats.prompt_tokens if stats else None,
                "gen_ai.usage.output_tokens": stats.completion_tokens if stats else None,
            },
        )


async def record_program_closed(
    pool: Any, reply: Any, carrier: Mapping[str, str] | None, log: Any
) -> None:
    """`ProgramTelemetry.closed` for a `ProgramClose` answer; never fails the caller."""
    if not isinstance(reply, ProgramReply):
        return
    try:
        await program_telemetry().closed(pool, reply, carrier)
    except Exception as exc:
        log.warning("program telemetry failed", program_id=reply.program_id, error=repr(exc))


_instance: ProgramTelemetry | None = None


def program_telemetry() -> ProgramTelemetry:
    global _instance
    if _instance is None:
        _instance = ProgramTelemetry()
    return _instance
