"""How long to wait before restarting a crashed service, and when crashing has become a loop.

Why exponential with a cap and a reset: a service that crashes once (a SIGKILL, an OOM kill)
should be back within a second, but one that dies at every start must not spin the CPU or flood
the log, so each crash in a row doubles the wait up to ``max_s``; a run that stayed up for
``stable_after_s`` proves the fault is gone, so the next crash starts from ``initial_s`` again.
``crash_loop_after`` crashes in a row without such a stable run are a *crash loop*: restarts go on
(at the capped delay, so a fault that clears itself is recovered), and every restart says so.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Backoff", "BackoffPolicy", "Delay"]


@dataclass(frozen=True)
class BackoffPolicy:
    """The restart delays: ``initial_s * factor**(n-1)`` for the n-th crash in a row, at most
    ``max_s``; the count resets after a run of ``stable_after_s``."""

    initial_s: float = 0.5
    factor: float = 2.0
    max_s: float = 30.0
    stable_after_s: float = 60.0
    crash_loop_after: int = 5

    def __post_init__(self) -> None:
        if self.initial_s < 0 or self.max_s < self.initial_s or self.factor < 1:
            raise ValueError(f"bad backoff policy {self}")
        if self.stable_after_s <= 0 or self.crash_loop_after < 1:
            raise ValueError(f"bad backoff policy {self}")


@dataclass(frozen=True)
class Delay:
    """The verdict on one crash: wait ``seconds``; ``attempt`` counts crashes in a row."""

    seconds: float
    attempt: int
    crash_loop: bool


class Backoff:
    """One service's crash count (not thread-safe: one restarter thread owns it)."""

    def __init__(self, policy: BackoffPolicy) -> None:
        self.policy = policy
        self.in_a_row = 0

    def after_crash(self, uptime_s: float) -> Delay:
        """Record a crash after a run of ``uptime_s`` and say how long to wait."""
        p = self.policy
        if uptime_s >= p.stable_after_s:
            self.in_a_row = 0
        self.in_a_row += 1
        seconds = min(p.max_s, p.initial_s * p.factor ** (self.in_a_row - 1))
        return Delay(seconds, self.in_a_row, self.in_a_row >= p.crash_loop_after)
