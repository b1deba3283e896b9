"""Queue depth per engine and MLFQ level over time, sampled by the dashboard's reader.

What is recorded: engines heartbeat only their current totals (`engines.running` / `waiting`), and
a call row holds its state and level now, not a history of them. So the series is built from
samples: each poll counts the unfinished calls per engine, level (as the schedulers last set it)
and state (running = admitted in the engine's batch; waiting = dispatched or preempted, in the
engine's queues), and this ring keeps the last `keep_s` seconds of them. The series therefore
starts when the first browser connects to this frontend replica (the reader runs only then).
Calls not yet dispatched wait at the schedulers and are counted under the engine `-`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

UNASSIGNED = "-"


class DepthHistory:
    """A bounded ring of depth samples, turned into per-engine series for the charts."""

    def __init__(self, keep_s: float = 600.0, max_samples: int = 1200) -> None:
        self.keep_s = keep_s
        self._samples: deque[tuple[float, dict[tuple[str, int, str], int]]] = deque(
            maxlen=max_samples
        )

    def add(self, at_ms: float, rows: Iterable[Mapping[str, Any]]) -> None:
        """One sample: `rows` as `ui_queries.queue_depth` returns them."""
        counts: dict[tuple[str, int, str], int] = {}
        for r in rows:
            queued = r["status"] == "queued"
            engine = UNASSIGNED if queued or r["engine_id"] is None else r["engine_id"]
            state = "running" if r["status"] == "running" else "waiting"
            key = (engine, int(r["level"]), state)
            counts[key] = counts.get(key, 0) + int(r["n"])
        self._samples.append((at_ms, counts))
        while self._samples and self._samples[0][0] < at_ms - self.keep_s * 1000:
            self._samples.popleft()

    def series(self, engines: Iterable[str] = ()) -> dict[str, Any]:
        """{engine: {"t": [ms...], "running": {level: [...]}, "waiting": {level: [...]}}}, one
        point per sample; `engines` are listed even when no sample has a call of theirs."""
        names = set(engines) | {k[0] for _, counts in self._samples for k in counts}
        levels: dict[tuple[str, str], set[int]] = {}
        for _, counts in self._samples:
            for engine, level, state in counts:
                levels.setdefault((engine, state), set()).add(level)
        out: dict[str, Any] = {}
        for name in sorted(names):
            entry: dict[str, Any] = {"t": [at for at, _ in self._samples]}
            for state in ("running", "waiting"):
                entry[state] = {
                    str(lv): [counts.get((name, lv, state), 0) for _, counts in self._samples]
                    for lv in sorted(levels.get((name, state), ()))
                }
            out[name] = entry
        return out
