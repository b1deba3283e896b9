"""Queues of the simulated engine: a call's rank, demotion as it crosses a queue boundary, and
anti-starvation promotion. Every rule is `autellix.policy`'s (`call_level`, `call_tiebreak`,
`check_waiting`, `MLFQConfig.upper`); this module only keeps the heaps in step with them.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable

from autellix.policy.gittins import level_with_hysteresis
from autellix.policy.rank import call_level, call_tiebreak
from autellix.policy.starvation import check_waiting
from autellix.sim.state import INF, WAITING, SimCall, SimEngine, SimState


class Queues(SimState):
    """Ranks and level changes of waiting and running calls."""

    _gittins_effective: Callable[[SimCall, float], float]  # GittinsLearning
    _gittins_next: Callable[[SimCall, float], float]
    _wpush: Callable[[SimEngine, SimCall], None]  # TenantShare
    _tenant_waits: Callable[[SimCall], None]

    def _rank_now(self, c: SimCall, step: int) -> float:
        """Current rank of a running call at engine step `step` (its value grows by one unit
        per step; SRPT's remaining work shrinks by one; gittins reads the value through the
        call's index curve and keeps its level within the hysteresis margin)."""
        if self.gittins is not None and not c.aged:
            eff = self._gittins_effective(c, c.v0 + step)
            return level_with_hysteresis(self.policy.mlfq, eff, int(c.lvl), self.gittins.hysteresis)
        return call_level(self.policy, value=c.v0 + step, aged=c.aged, remaining=c.v0 - step)

    def _wait_rank(self, c: SimCall) -> float:
        """Rank of a waiting call: the level of base + used (gittins: of its effective size), or
        its program's remaining work."""
        value = c.base + c.used
        if self.gittins is not None:
            value = self._gittins_effective(c, value)
        return call_level(
            self.policy,
            value=value,
            aged=c.aged,
            remaining=c.prog.remaining_out - c.gen,
        )

    def _enqueue(self, e: SimEngine, c: SimCall, t: float) -> None:
        """Put a call (new or preempted) in its engine's waiting queue."""
        c.state = WAITING
        c.wait_id += 1
        c.ver += 1
        e.n_waiting += 1
        if self.starv is not None and not c.aged:
            self._starvation(e, c, t, c.wc)
        c.lvl = self._wait_rank(c)
        self._tenant_waits(c)
        self._wpush(e, c)

    def _promote(self, c: SimCall, t: float) -> None:
        """Paper's rule: to Q1 with a fresh quantum; reset (discard) the call's W_c and T_c."""
        acc = t - c.wait_since
        c.prog.wait_s += acc
        c.wait_since = t
        c.wc = 0.0
        c.tc = 0.0
        c.base = -c.used
        if self.gittins is not None:  # ordered by its effective size at the fresh value
            c.tb = call_tiebreak(
                self.policy,
                value=self._gittins_effective(c, 0.0),
                issue_s=c.issue_t,
                program_arrival_s=c.prog.arrival,
            )
        self.promotions += 1

    def _age(self, c: SimCall) -> None:
        """Beyond-paper: sticky top queue, FCFS by program arrival."""
        c.aged = True
        c.tb = call_tiebreak(
            self.policy,
            value=c.base,
            issue_s=c.issue_t,
            program_arrival_s=c.prog.arrival,
            aged=True,
        )
        self.promotions += 1

    def _starvation(self, e: SimEngine, c: SimCall, t: float, wc: float) -> bool:
        """Apply due promotions to a waiting call and schedule its next check; True if promoted.

        `policy.starvation.check_waiting` decides (the paper's ratio rule below Q1, the age rule
        until aged) and says when the next check is due."""
        st = self.starv
        assert st is not None
        prog = c.prog
        check = check_waiting(
            st,
            now=t,
            level=self._wait_rank(c),
            w_p=prog.wp,
            w_c=wc,
            t_p=prog.tp,
            t_c=c.tc,
            program_arrival_s=prog.arrival,
        )
        if check.aged:
            self._age(c)
            return True
        if check.promote:
            self._promote(c, t)
        if check.next_check_s < INF:
            heapq.heappush(e.deadlines, (check.next_check_s, c.uid, c.wait_id, c))
        return check.promote

    def _check_starvation(self, e: SimEngine, c: SimCall, t: float) -> None:
        if self._starvation(e, c, t, c.wc + (t - c.wait_since)):
            c.ver += 1
            c.lvl = self._wait_rank(c)
            self._wpush(e, c)

    def _cross(self, e: SimEngine, c: SimCall, step: int) -> None:
        lvl = self._rank_now(c, step)
        if lvl != c.lvl:
            c.lvl = lvl
            c.ver += 1
            heapq.heappush(e.rheap, (-lvl, -c.tb, -c.uid, c.ver, c))
        self._push_cross(e, c, step)

    def _push_cross(self, e: SimEngine, c: SimCall, step: int) -> None:
        if not self.binned or c.aged:
            return
        if self.gittins is not None:
            nxt = self._gittins_next(c, c.v0 + step)  # where its effective size may change
        else:
            nxt = self.policy.mlfq.upper(c.v0 + step)  # the next value where its level changes
        if nxt == INF:
            return
        s = max(step + 1, math.ceil(nxt - c.v0))  # float noise must not re-cross at `step`
        finish = c.admit_step + max(1, c.output - c.gen)
        if s < finish:
            heapq.heappush(e.sheap, (s, 1, c.uid, c.run_id, c))
