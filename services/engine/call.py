"""One `EngineCall` per call the engine holds: its dispatch, tokens so far, and its rank key.

The rank key `(level, tiebreak, seq)` orders calls inside the engine (`queues.py`, and the
admission walk in `admission.py`): `level` is the scheduler's MLFQ level, `tiebreak` comes from
the scheduler (`autellix.policy.call_rank`: the program's arrival for program-aware policies,
else the call's issue time) and `seq` is the arrival order here. A preempted call keeps its key,
so it goes back ahead of everything that ranks after it (in particular, in front of later
arrivals).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field

from autellix.backends.textout import OutputText
from autellix.policy import ServiceUnits
from autellix.wire.protocol import TOKEN_LOGPROBS, Dispatch, TokenLogprob

_seq = itertools.count()

# Backend priorities are `level * _LEVEL_SPAN + tiebreak in ms`: tiebreaks (epoch seconds or
# service units) stay below 10**12 ms for centuries, levels below ~9,000 fit in an int64.
_LEVEL_SPAN = 10**15


def backend_priority(level: int, tiebreak: float) -> int:
    """The rank key `(level, tiebreak)` as one int, lower first, for a backend's own queue.

    Why not the level alone: vLLM orders its waiting requests by `(priority, arrival)`, and with
    calls resident in that queue (`queue_ahead`) it refills a freed slot from them. With the
    level alone it took them in the order they reached vLLM, not in the order the scheduler
    ranked them inside the level (program arrival, or attained service with
    `--within-level service`), so the engine's exact order was lost for the resident calls.
    """
    ms = min(max(round(tiebreak * 1000.0), 0), _LEVEL_SPAN - 1)
    return max(level, 0) * _LEVEL_SPAN + ms


@dataclass(eq=False)
class EngineCall:
    """A call this engine holds: waiting, running (a segment in the backend), or done."""

    dispatch: Dispatch
    level: int
    seq: int = field(default_factory=lambda: next(_seq))
    arrived: float = field(default_factory=time.monotonic)
    prompt_ids: list[int] | None = None
    tokens: list[int] = field(default_factory=list)  # whole completion so far (incl. resumed)
    sent: int = 0  # tokens already streamed to the caller (= next delta offset)
    saved: int = 0  # tokens already persisted to Postgres (progress)
    cached_tokens: int | None = None
    run_s: float = 0.0
    segments: int = 0
    preemptions: int = 0
    state: str = "waiting"  # waiting | starting | running | done
    task: asyncio.Task[None] | None = None
    gen_task: asyncio.Task[str | None] | None = None
    stop_reason: str | None = None  # "preempt" | "cancel" | "lost" | "shutdown" while stopping
    stop_detail: str = ""
    requeue_level: int | None = None
    preempt_counted: bool = False
    control_seq: int = -1
    tiebreak: float = 0.0
    run_start_tokens: int = 0  # len(tokens) when the current segment started (min-run rule)
    prefill_tokens: int = 0  # prompt tokens computed (not cached) over all its segments
    run_started: float | None = None  # monotonic start of the current segment, while running
    reported: float = -1.0  # service in the last ServiceReport
    preempted_by: str | None = None  # the call a pending preemption makes room for
    out: OutputText | None = None  # its output text and stop strings (runner: `_text`)
    #: per-token log-probabilities of tokens[logprobs_from:] when the call asked for them; a
    #: resumed dispatch brings the earlier engine's saved ones (`resume_logprobs`), or none
    #: (then logprobs_from is where this engine's own begin)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    logprobs_from: int = 0

    def __post_init__(self) -> None:
        self.tokens = list(self.dispatch.resume_token_ids)
        self.sent = len(self.tokens)
        self.saved = len(self.tokens)
        brought = self.dispatch.resume_logprobs
        if brought is not None and len(brought) == len(self.tokens):
            self.logprobs, self.logprobs_from = list(brought), 0
        else:
            self.logprobs_from = len(self.tokens)
        self.tiebreak = self.dispatch.tiebreak
        self.run_s = self.dispatch.resume_run_s
        self.control_seq = self.dispatch.control_seq  # Controls up to it are in the Dispatch

    def logprobs_of(self, start: int, end: int) -> list[TokenLogprob] | None:
        """Logprobs of tokens[start:end] (None: the call did not ask; the entries this engine
        has not got, for tokens a resumed dispatch brought, are left out)."""
        if self.dispatch.request.sampling.logprobs is None:
            return None
        lo = max(start, self.logprobs_from) - self.logprobs_from
        return self.logprobs[lo : max(lo, end - self.logprobs_from)]

    def saved_logprobs(self, upto: int) -> str | None:
        """The logprobs of tokens[:upto] as compact JSON for the call's row (None: not asked, or
        not known for every one of them: a row must never hold a list with a hole)."""
        if self.dispatch.request.sampling.logprobs is None or self.logprobs_from > 0:
            return None
        if len(self.logprobs) < upto:
            return None
        return TOKEN_LOGPROBS.dump_json(self.logprobs[:upto]).decode()

    def progress(self) -> tuple[str, int, list[int], str | None]:
        """What a progress save writes for it: (call_id, attempt, tokens streamed, their
        logprobs as JSON or None)."""
        return (
            self.call_id,
            self.attempts,
            self.tokens[: self.sent],
            self.saved_logprobs(self.sent),
        )

    @property
    def key(self) -> tuple[float, float, int]:
        """Rank key, lower first (see module docstring)."""
        return (self.level, self.tiebreak, self.seq)

    @property
    def backend_priority(self) -> int:
        """Its rank key for the backend's own queue (see `backend_priority`)."""
        return backend_priority(self.level, self.tiebreak)

    @property
    def service(self) -> float:
        """Attained service units: decoded tokens + weighted computed prompt tokens (the
        policy's `ServiceUnits`), never below what it had when it was dispatched here."""
        units = ServiceUnits(self.dispatch.prefill_weight)
        mine = units.of(len(self.tokens), self.prefill_tokens)
        return max(mine, self.dispatch.resume_service)

    def run_seconds(self, now: float | None = None) -> float:
        """Seconds admitted so far, including the segment that is running now."""
        if self.run_started is None:
            return self.run_s
        return self.run_s + ((now if now is not None else time.monotonic()) - self.run_started)

    @property
    def run_tokens(self) -> int:
        """Tokens decoded in the current segment (a run younger than min_run is protected)."""
        return len(self.tokens) - self.run_start_tokens

    @property
    def call_id(self) -> str:
        return self.dispatch.call_id

    @property
    def attempts(self) -> int:
        """The `calls.attempts` value this engine owns the call under."""
        return self.dispatch.attempt + 1

    @property
    def max_tokens(self) -> int:
        return self.dispatch.request.sampling.max_tokens

    @property
    def remaining(self) -> int:
        return max(0, self.max_tokens - len(self.tokens))
