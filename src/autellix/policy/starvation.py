"""Anti-starvation: when a waiting call is promoted to the top queue.

Paper's rule (per scheduling round, for a waiting call c of program p):
    (W_p + W_c) / max(eps, T_p + T_c) >= beta  ->  move c to Q1, reset W_c and T_c only.
W = time spent waiting, T = time spent executing, in seconds. W_p and T_p are the program's totals
over its finished calls (each contributing its W_c, T_c since its last reset); W_c and T_c are the
call's own since it was issued or last promoted. Promotion *discards* the call's W_c and T_c (the
literal reading of "reset"): folding them into W_p instead would mark the program as starving for
good and promote every later call at once, which under overload turns PLAS back into FCFS.

For a waiting call only W_c grows (at rate 1), so the moment the rule fires is known in closed form
(`promotion_time`, `check_waiting`) and the simulator need not poll.

Beyond the paper (`age_s`): the wait/service ratio scales with the service a program already got,
so a huge program (large T_p) must wait beta times its whole past service before promotion, and
under overload its latency grows without bound behind a stream of small programs. A program older
than `age_s` has all its calls promoted *stickily* (they stay in Q1, never demoted, and order by
program arrival), which serves old programs first-come-first-served like FCFS would, bounding the
tail at the cost of some average latency. Disabled (None) by default; ablated in docs.

The tail guard (`slowdown`, beyond the paper) is the same sticky promotion with a scale-free
threshold: a program is aged once its age reaches `slowdown x max(slowdown_floor_s, T_p + T_c)`,
i.e. once its slowdown (time since arrival over time executed) reaches `slowdown`. A fixed
`age_s` must be tuned to the workload's latencies (seconds for BFCL-like calls, an hour for a
tree search under overload); a slowdown bound is not, and it ages a starved program whatever its
size while leaving a big program that is being served alone. Both rules share one sticky state
(`is_aged`) and one deadline (`aging_deadline`). Disabled (None) by default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StarvationConfig:
    """beta: the paper's wait/service threshold (None disables the rule).
    eps: floor of the denominator, seconds.
    age_s: beyond-paper sticky promotion of programs older than this (None disables).
    slowdown: the tail guard: sticky promotion of programs whose age reaches this many times
        `max(slowdown_floor_s, T_p + T_c)` (None disables).
    slowdown_floor_s: the executed time a program is credited at least, seconds (a program
        that has not run yet is aged after `slowdown x slowdown_floor_s`).
    """

    beta: float | None = 10.0
    eps: float = 0.05
    age_s: float | None = None
    slowdown: float | None = None
    slowdown_floor_s: float = 1.0

    @property
    def enabled(self) -> bool:
        return self.beta is not None or self.ages

    @property
    def ages(self) -> bool:
        """Whether any sticky-promotion rule (age or slowdown) is on."""
        return self.age_s is not None or self.slowdown is not None

    @property
    def min_aging_age_s(self) -> float | None:
        """The youngest program age at which either sticky rule can fire (None: neither is on);
        the live scheduler's candidate query looks at top-queue calls of programs this old."""
        ages = [a for a in (self.age_s, self._slowdown_age(0.0)) if a is not None]
        return min(ages) if ages else None

    def _slowdown_age(self, run_s: float) -> float | None:
        if self.slowdown is None:
            return None
        return self.slowdown * max(self.slowdown_floor_s, run_s)

    def aging_age_s(self, run_s: float) -> float:
        """The program age at which a program that has executed `run_s` seconds (T_p + T_c) is
        aged by either rule (inf when neither is on)."""
        ages = [a for a in (self.age_s, self._slowdown_age(run_s)) if a is not None]
        return min(ages) if ages else math.inf


def wait_ratio(w_p: float, w_c: float, t_p: float, t_c: float, eps: float) -> float:
    """The paper's starvation ratio (W_p + W_c) / max(eps, T_p + T_c)."""
    return (w_p + w_c) / max(eps, t_p + t_c)


def should_promote(
    cfg: StarvationConfig,
    *,
    w_p: float,
    w_c: float,
    t_p: float,
    t_c: float,
    program_age_s: float = 0.0,
) -> bool:
    """True if a waiting call must move to the top queue now (any rule)."""
    if is_aged(cfg, program_age_s, run_s=t_p + t_c):
        return True
    if cfg.beta is None:
        return False
    return wait_ratio(w_p, w_c, t_p, t_c, cfg.eps) >= cfg.beta


def is_aged(cfg: StarvationConfig, program_age_s: float, run_s: float = 0.0) -> bool:
    """Whether a sticky rule (age or slowdown: top queue for good) applies to a program of this
    age that has executed `run_s` seconds (T_p + T_c)."""
    return cfg.ages and program_age_s >= cfg.aging_age_s(run_s)


def aging_reason(cfg: StarvationConfig, program_age_s: float, run_s: float = 0.0) -> str:
    """Which sticky rule aged a program, in words (for decision reasons and `calls explain`)."""
    if cfg.age_s is not None and program_age_s >= cfg.age_s:
        return f"aged: program older than {cfg.age_s:g}s"
    floor = max(cfg.slowdown_floor_s, run_s)
    return (
        f"tail guard: age {program_age_s:.1f}s >= slowdown {cfg.slowdown:g} x max(floor "
        f"{cfg.slowdown_floor_s:g}s, run {run_s:.2f}s) = {(cfg.slowdown or 0.0) * floor:.1f}s"
    )


def aging_deadline(
    cfg: StarvationConfig, *, program_arrival_s: float, t_p: float, t_c: float
) -> float:
    """When a sticky rule fires for a program that executes no more meanwhile (inf: never).

    Exact while T_p + T_c stay put; they only grow (a sibling finishes), which moves the true
    moment later, so a check at this time that finds the rule not firing yet reschedules."""
    return program_arrival_s + cfg.aging_age_s(t_p + t_c)


def ratio_deadline(
    cfg: StarvationConfig, *, now: float, w_p: float, w_c: float, t_p: float, t_c: float
) -> float:
    """When the paper's ratio rule fires for a call that keeps waiting from `now` on (only W_c
    grows, at rate 1): `now + beta * max(eps, T_p + T_c) - (W_p + W_c)`; at or before `now` it
    has fired already. inf when the rule is off."""
    if cfg.beta is None:
        return math.inf
    return now + cfg.beta * max(cfg.eps, t_p + t_c) - (w_p + w_c)


def promotion_time(
    cfg: StarvationConfig,
    *,
    now: float,
    w_p: float,
    w_c: float,
    t_p: float,
    t_c: float,
    program_arrival_s: float,
) -> float:
    """Earliest time >= now at which a call waiting from `now` on is promoted (inf if never).

    Exact as long as W_p and T_p do not change meanwhile (they change only when a sibling call of
    the same program finishes; the caller re-checks with `should_promote` when this time comes).
    """
    t = max(now, ratio_deadline(cfg, now=now, w_p=w_p, w_c=w_c, t_p=t_p, t_c=t_c))
    if cfg.ages:
        aged_at = aging_deadline(cfg, program_arrival_s=program_arrival_s, t_p=t_p, t_c=t_c)
        t = min(t, max(now, aged_at))
    return t


@dataclass(frozen=True, slots=True)
class WaitingCheck:
    """What the anti-starvation rules say about a waiting call now.

    aged: the age rule applies (sticky top queue; nothing more to check).
    promote: the ratio rule fires now (top queue, fresh W_c and T_c).
    next_check_s: when to look at the call again if it is still waiting (inf: never).
    """

    aged: bool
    promote: bool
    next_check_s: float


def check_waiting(
    cfg: StarvationConfig,
    *,
    now: float,
    level: float,
    w_p: float,
    w_c: float,
    t_p: float,
    t_c: float,
    program_arrival_s: float,
) -> WaitingCheck:
    """Both rules for a call waiting at `level`, and the next moment either can change it.

    The ratio rule only applies below the top queue (a Q1 call has nowhere to go); after a
    promotion only the age rule can still change the call, so that is the next check. The
    promotion test is `should_promote` (the live scheduler's) or the deadline having passed: the
    two are the same inequality, and accepting either keeps float noise from leaving a call whose
    deadline is now unpromoted (it would be re-checked at the same instant for ever).
    """
    if is_aged(cfg, now - program_arrival_s, run_s=t_p + t_c):
        return WaitingCheck(aged=True, promote=False, next_check_s=math.inf)
    promote = False
    due = math.inf
    if cfg.beta is not None and level > 0:
        due = ratio_deadline(cfg, now=now, w_p=w_p, w_c=w_c, t_p=t_p, t_c=t_c)
        if due <= now or should_promote(cfg, w_p=w_p, w_c=w_c, t_p=t_p, t_c=t_c):
            promote = True
            due = math.inf
    if cfg.ages:
        due = min(due, aging_deadline(cfg, program_arrival_s=program_arrival_s, t_p=t_p, t_c=t_c))
    return WaitingCheck(aged=False, promote=promote, next_check_s=max(due, now))
