"""What each fault cost: every call classified against Postgres and the wire, and how long the
stack took to complete calls at its pre-fault rate again.

A call belongs to the fault whose window its first submit fell in (a window runs from the end of
the previous fault's to the end of this fault's observation after the kill), so the calls in
flight at the kill are counted with it. Per call:

* **accepted**: Postgres has its row (the frontend stored it) or the client got its call id;
  a call never accepted was refused explicitly (counted apart as `not_accepted`);
* **completed**: its stream ended with a result; **failed_explicitly**: with a typed error;
* **lost**: accepted, and no answer within the call's deadline (or by the end of the drain);
* **duplicated**: answered twice on the wire with different answers (the `wiretap`: a final
  and an error, or two finals with other tokens or another finish), more than one result in
  its stream, or a completed stream whose streamed token ids differ from the result's, or the
  result's from the tokens Postgres stored (a token repeated or missing anywhere shows here).
* **replayed**: the same answer more than once on the wire: a resend under the same client
  call id (no `CallAccepted` within a second) answered with the stored final, as the protocol
  says; the client takes the first and drops the copy, so it is not a second answer.

**recovery_s** (`recovery`): let `r0` be the completions per second over the `pre_s` seconds
before the kill. A window of `WINDOW_S` starting at time `t` is *healthy* when it holds at least
`HEALTHY_FRACTION * r0 * WINDOW_S` completions. recovery_s is the smallest `t - kill` (on a
`STEP_S` grid, from 0) such that every window starting in `[t, t + HOLD_S]` is healthy; 0 when
the rate never dipped, None when it was not back within the observation (or nothing
completed before the kill).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from autellix.bench.chaos.load import CallRecord

__all__ = [
    "HEALTHY_FRACTION",
    "HOLD_S",
    "STEP_S",
    "WINDOW_S",
    "FaultCount",
    "FaultWindow",
    "classify",
    "rate_series",
    "recovery",
]

WINDOW_S = 2.0
STEP_S = 0.25
HOLD_S = 2.0
HEALTHY_FRACTION = 0.75


@dataclass(frozen=True)
class FaultWindow:
    """The calls of one fault: first submits in [start, end); the kill at `kill_at` (None for
    a phase without a fault, the soak)."""

    fault: str
    start: float
    end: float
    kill_at: float | None
    pre_s: float


@dataclass
class FaultCount:
    fault: str
    accepted: int = 0
    completed: int = 0
    failed_explicitly: int = 0
    lost: int = 0
    duplicated: int = 0
    recovery_s: float | None = None
    replayed: int = 0
    submitted: int = 0
    not_accepted: int = 0
    pre_fault_rate: float = 0.0  # completions per second before the kill
    max_latency_s: float = 0.0  # longest submit-to-answer of a completed call
    error_codes: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)  # a few keys per problem

    def note(self, problem: str, key: str) -> None:
        keys = self.examples.setdefault(problem, [])
        if len(keys) < 5:
            keys.append(key)


def _count(times: list[float], a: float, b: float) -> int:
    return bisect_left(times, b) - bisect_left(times, a)


def recovery(
    completions: list[float], kill_at: float, pre_s: float, end: float
) -> tuple[float | None, float]:
    """(recovery_s, pre-fault rate) by the module's definition; `completions` sorted."""
    r0 = _count(completions, kill_at - pre_s, kill_at) / pre_s
    if r0 == 0:
        return None, r0  # nothing completed before the kill: no rate to come back to
    need = HEALTHY_FRACTION * r0 * WINDOW_S
    starts = []
    t = kill_at
    while t + WINDOW_S <= end + 1e-9:
        starts.append(t)
        t += STEP_S
    healthy = [_count(completions, s, s + WINDOW_S) >= need for s in starts]
    hold = round(HOLD_S / STEP_S)
    for k in range(len(starts)):
        if all(healthy[k : k + hold + 1]):
            return round(k * STEP_S, 2), r0
    return None, r0


def rate_series(
    completions: list[float], start: float, end: float, bin_s: float = 0.5
) -> list[tuple[float, float]]:
    """(bin start - `start`, completions per second) over [start, end)."""
    out = []
    t = start
    while t < end:
        out.append((round(t - start, 3), _count(completions, t, t + bin_s) / bin_s))
        t += bin_s
    return out


def _describe(rec: CallRecord, row: dict[str, Any] | None) -> str:
    """A problem call in a few words: its key, its submits, and how Postgres has it."""
    stored = "no row" if row is None else f"{row.get('status')} in Postgres"
    dup = ", a duplicate accept" if rec.duplicate_reply else ""
    return f"{rec.key} ({rec.submits} submit(s){dup}, {stored})"


def _tokens_ok(rec: CallRecord, row: dict[str, Any] | None) -> list[str]:
    """What is wrong with a completed call's tokens (empty: streamed = result = Postgres)."""
    problems = []
    if rec.results > 1:
        problems.append("answered twice in its stream")
    if rec.streamed != rec.final:
        problems.append("streamed tokens differ from the result's")
    if row is None or row.get("status") != "finished":
        problems.append("not finished in Postgres")
    elif list(row.get("output_token_ids") or []) != rec.final:
        problems.append("result tokens differ from Postgres'")
    return problems


def classify(
    window: FaultWindow,
    records: list[CallRecord],
    rows: dict[str, dict[str, Any]],
    answers: Counter[str],
    completions: list[float],
    kinds: dict[str, list[str]] | None = None,
    distinct: dict[str, set[str]] | None = None,
) -> FaultCount:
    """Count the window's calls; `rows` are Postgres' call rows by client call id, `answers`
    the wiretap's answers per call id (`kinds`: what they were, for the examples; `distinct`:
    the different ones)."""
    out = FaultCount(window.fault)
    codes: Counter[str] = Counter()
    for rec in records:
        if not window.start <= rec.submitted < window.end:
            continue
        out.submitted += 1
        row = rows.get(rec.key)
        call_id = rec.call_id or (row or {}).get("id")
        if row is None and rec.call_id is None:
            out.not_accepted += 1
            codes[f"not accepted: {rec.error_code}"] += 1
            continue
        out.accepted += 1
        copies = answers[call_id] if call_id is not None else 0
        different = len((distinct or {}).get(str(call_id), ())) if distinct is not None else copies
        twice = different > 1
        if copies > 1 and not twice:
            out.replayed += 1
        if rec.outcome == "completed":
            out.completed += 1
            assert rec.ended is not None
            out.max_latency_s = max(out.max_latency_s, round(rec.ended - rec.submitted, 2))
            problems = _tokens_ok(rec, row)
            if twice:
                seen = ", ".join((kinds or {}).get(str(call_id), []))
                problems.append(f"answered twice on the wire ({seen})")
            if problems:
                out.duplicated += 1
                out.note("duplicated: " + "; ".join(problems), _describe(rec, row))
        elif rec.outcome == "error":
            out.failed_explicitly += 1
            codes[str(rec.error_code)] += 1
            if twice:
                out.duplicated += 1
                seen = ", ".join((kinds or {}).get(str(call_id), []))
                out.note(f"duplicated: answered twice on the wire ({seen})", rec.key)
        else:
            out.lost += 1
            out.note(f"lost ({rec.outcome})", _describe(rec, row))
    out.error_codes = dict(codes)
    if window.kill_at is not None:
        out.recovery_s, out.pre_fault_rate = recovery(
            completions, window.kill_at, window.pre_s, window.end
        )
    else:
        span = max(1e-9, window.end - window.start)
        out.pre_fault_rate = _count(completions, window.start, window.end) / span
    out.pre_fault_rate = round(out.pre_fault_rate, 2)
    return out
