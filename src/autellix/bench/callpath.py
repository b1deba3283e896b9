"""Where one call's time goes, from the caller's clock and the services' timestamps.

A live benchmark compares a program's latency across systems; when one side is slower, the
question is *which part of each call* is slower. Every answered call carries the services' own
wall-clock timestamps (`Timing`: accepted, dispatched, started, finished; all processes of a
deployment share the host clock), and the caller knows when it sent the call and when the answer
arrived. Together they split a call into hops:

| hop | what it is |
|---|---|
| `to_frontend` | request through NATS until the frontend's accept (client → frontend) |
| `scheduling` | accepted → dispatched: JetStream, the scheduler's decision and its write |
| `engine_queue` | dispatched → first started: Dispatch delivery plus the engine's own level queue |
| `engine` | first started → finished: the backend holds it (vLLM: its waiting queue too) |
| `to_client` | finished → the answer in the caller's hands (finish write, NATS, SDK) |

A plain-vLLM call (the benchmark's in-process baseline) has no control plane: its whole latency
is `engine`. `control` = everything but `engine` and `engine_queue` is the time a call spends
in the control plane proper.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from autellix.wire.protocol import Timing

HOPS = ("to_frontend", "scheduling", "engine_queue", "engine", "to_client")
COLUMNS = ("latency", *HOPS, "control")  # what `summarize` reports, in table order


@dataclass(frozen=True)
class CallPath:
    """One answered call's hops in seconds (None where the system has no such hop)."""

    latency: float
    engine: float
    to_frontend: float | None = None
    scheduling: float | None = None
    engine_queue: float | None = None
    to_client: float | None = None

    @property
    def control(self) -> float:
        """Latency outside the engine and its queue: what the control plane adds."""
        return max(0.0, self.latency - self.engine - (self.engine_queue or 0.0))


def call_path(timing: Timing, latency_s: float, received_at: datetime | None = None) -> CallPath:
    """Split one call. `latency_s`: the caller's submit → answer; `received_at`: when the answer
    arrived (wall clock, default now). Without dispatch/start stamps (plain vLLM), the whole
    latency is engine time."""
    received_at = received_at or datetime.now(UTC)
    if timing.dispatched_at is None or timing.started_at is None:
        return CallPath(latency=latency_s, engine=latency_s)
    submitted = received_at - timedelta(seconds=latency_s)

    def gap(a: datetime, b: datetime) -> float:  # clocks of two hosts may disagree a little
        return max(0.0, (b - a).total_seconds())

    return CallPath(
        latency=latency_s,
        to_frontend=gap(submitted, timing.accepted_at),
        scheduling=gap(timing.accepted_at, timing.dispatched_at),
        engine_queue=gap(timing.dispatched_at, timing.started_at),
        engine=gap(timing.started_at, timing.finished_at),
        to_client=gap(timing.finished_at, received_at),
    )


def summarize(paths: Iterable[CallPath]) -> dict[str, dict[str, float]]:
    """Per hop (and `latency`, `control`): calls, mean, p50, p90, p99 in milliseconds."""
    paths = list(paths)
    out: dict[str, dict[str, float]] = {}
    for name in COLUMNS:
        values = [getattr(p, name) for p in paths]
        xs = np.array([v for v in values if v is not None], dtype=float) * 1000.0
        if xs.size == 0:
            continue
        out[name] = {
            "calls": int(xs.size),
            "mean_ms": float(xs.mean()),
            "p50_ms": float(np.percentile(xs, 50)),
            "p90_ms": float(np.percentile(xs, 90)),
            "p99_ms": float(np.percentile(xs, 99)),
        }
    return out


TABLE_NOTE = (
    "From the caller's clock and the services' timestamps (`bench.callpath`): `engine` = the "
    "backend holds the call (vLLM's own waiting queue included); `engine queue` = dispatched -> "
    "started (the Autellix engine's level queue); `control` = the rest (client -> frontend -> "
    "scheduler -> engine, finish -> client). A plain-vLLM call is all `engine`."
)


def table_rows(runs: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Markdown rows (mean / p90 ms of each hop), one per benchmark run record with a
    `call_path` summary."""
    header = ["rate", "policy", "calls", *(n.replace("_", " ") for n in COLUMNS)]
    rows = []
    for r in runs:
        cp = r.get("call_path") or {}
        if not cp:
            continue
        cells = [
            f"{cp[n]['mean_ms']:.0f} / {cp[n]['p90_ms']:.0f}" if n in cp else "-" for n in COLUMNS
        ]
        rows.append([f"{r['rate']:g}", r["policy"], str(cp["latency"]["calls"]), *cells])
    return header, rows
