"""Per-call records of a simulated run (opt-in with `simulate(..., record_calls=True)`).

Used by the property tests (work conservation, parents before children) and for debugging a
policy's decisions; off by default because a 1,000-program mixed run has ~60,000 calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class CallRecord:
    """One call's life: when it was issued, each run on an engine, and when it finished.

    runs: (engine, start_s, stop_s, tokens decoded in that run, prompt tokens computed at start)
    """

    program_id: str
    index: int
    issue_s: float = -1.0
    finish_s: float = -1.0
    runs: list[tuple[int, float, float, int, int]] = field(default_factory=list)
