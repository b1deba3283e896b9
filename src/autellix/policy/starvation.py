"""Anti-starvation: when a waiting call is promoted to the top queue.

Paper's rule (per scheduling round, for a waiting call c of program p):
    (W_p + W_c) / max(eps, T_p + T_c) >= beta  ->  move c to Q1, reset W_c and T_c only.
W = time spent waiting, T = time spent executing, in seconds. W_p and T_p are the program's totals
over its finished calls (each contributing its W_c, T_c since its last reset); W_c and T_c are the
call's own since it was issued or last promoted. Promotion *discards* the call's W_c and T_c (the
literal reading of "reset"): folding them into W_p instead would mark the program as starving for
good and promote every later call at once, which under overload turns PLAS back into FCFS.

For a waiting call only W_c grows (at rate 1), so the moment the rule fires is known in closed form
(`promotion_time`) and the simulator need not poll.

Beyond the paper (`age_s`): the wait/service ratio scales with the service a program already got,
so a huge program (large T_p) must wait beta times its whole past service before promotion, and
under overload its latency grows without bound behind a stream of small programs. A program older
than `age_s` has all its calls promoted *stickily* (they stay in Q1, never demoted, and order by
program arrival), which serves old programs first-come-first-served like FCFS would, bounding the
tail at the cost of some average latency. Disabled (None) by default; ablated in docs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StarvationConfig:
    """beta: the paper's wait/service threshold (None disables the rule).
    eps: floor of the denominator, seconds.
    age_s: beyond-paper sticky promotion of programs older than this (None disables).
    """

    beta: float | None = 10.0
    eps: float = 0.05
    age_s: float | None = None

    @property
    def enabled(self) -> bool:
        return self.beta is not None or self.age_s is not None


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
    """True if a waiting call must move to the top queue now (either rule)."""
    if cfg.age_s is not None and program_age_s >= cfg.age_s:
        return True
    if cfg.beta is None:
        return False
    return wait_ratio(w_p, w_c, t_p, t_c, cfg.eps) >= cfg.beta


def is_aged(cfg: StarvationConfig, program_age_s: float) -> bool:
    """Whether the beyond-paper age rule (sticky top queue) applies to a program."""
    return cfg.age_s is not None and program_age_s >= cfg.age_s


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
    t = math.inf
    if cfg.beta is not None:
        need = cfg.beta * max(cfg.eps, t_p + t_c) - (w_p + w_c)
        t = now + max(0.0, need)
    if cfg.age_s is not None:
        t = min(t, max(now, program_arrival_s + cfg.age_s))
    return t
