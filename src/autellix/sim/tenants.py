"""Tenants in the simulator: who a program belongs to, and the fair share across tenants.

`assign_tenants` gives each program a tenant by offered-load shares (`"heavy:10,light:1"`: ten
of every eleven programs, on average, are heavy's; drawn per program id from the seed, so the
same programs get the same tenants whatever else changes, and a bench can run one tenant's
programs alone). With the fair share on (`tenant_weights` given) each engine keeps one waiting
heap per tenant: the next call admitted is the best-ranked call (by the program policy) of the
backlogged tenant with the smallest virtual counter (`autellix.policy.fair_share`), and a call
may preempt another tenant's running call only if that tenant's counter is higher. Counters are
charged the VTC cost (prompt tokens computed x 1 + decoded tokens x 2) when a call is admitted
(its prefill) and when it leaves the batch (its decoded tokens), across all engines.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Sequence

from autellix.policy.fair_share import FairShareConfig, charge, on_return, pick_tenant
from autellix.sim.state import WAITING, SimCall, SimEngine, SimProgram, SimState

PROMPT_COST = 1.0  # VTC's cost of a computed prompt token ...
DECODE_COST = 2.0  # ... and of a decoded token (Sheng et al., OSDI 2024)


def parse_shares(text: str) -> dict[str, float]:
    """`"heavy:10,light:1"` -> offered-load shares; ValueError names the bad item."""
    out: dict[str, float] = {}
    for item in filter(None, (x.strip() for x in text.split(","))):
        name, sep, value = item.partition(":")
        try:
            share = float(value)
        except ValueError:
            share = float("nan")
        if not sep or not name.strip() or not 0 < share < float("inf"):
            raise ValueError(f"tenant share {item!r}: expected NAME:POSITIVE_NUMBER")
        out[name.strip()] = share
    if not out:
        raise ValueError("tenants: need at least one NAME:SHARE")
    return out


def tenant_of(program_id: str, shares: dict[str, float], seed: int) -> str:
    """The tenant of one program: drawn by `shares` from the seed and the program id."""
    rng = random.Random(f"{seed}-tenant-{program_id}")
    names = sorted(shares)
    return rng.choices(names, weights=[shares[n] for n in names])[0]


def assign_tenants(progs: Sequence[SimProgram], shares: dict[str, float] | None, seed: int) -> None:
    for p in progs:
        p.tenant = "" if shares is None else tenant_of(p.spec.program_id, shares, seed)


class TenantShare(SimState):
    """Per-tenant waiting heaps and virtual counters (active only with `self.fair` set)."""

    fair: FairShareConfig | None
    vtc: dict[str, float]
    t_waiting: dict[str, int]

    def _wpush(self, e: SimEngine, c: SimCall) -> None:
        """Put a waiting call's heap entry where admission looks for it."""
        entry = (c.lvl, c.tb, c.uid, c.ver, c)
        if self.fair is None:
            heapq.heappush(e.wheap, entry)
            return
        heapq.heappush(e.theaps.setdefault(c.prog.tenant, []), entry)

    def _tenant_waits(self, c: SimCall) -> None:
        """A call of `c`'s tenant starts waiting (new or preempted): a tenant that had nothing
        waiting returns at the current minimum (no banked credit)."""
        if self.fair is None:
            return
        t = c.prog.tenant
        n = self.t_waiting.get(t, 0)
        if n == 0:
            backlogged = [x for x, k in self.t_waiting.items() if k > 0]
            self.vtc = on_return(self.vtc, t, backlogged)
        self.t_waiting[t] = n + 1

    def _tenant_admitted(self, c: SimCall, prompt_tokens: int) -> None:
        if self.fair is None:
            return
        t = c.prog.tenant
        self.t_waiting[t] -= 1
        self.vtc = charge(self.fair, self.vtc, t, PROMPT_COST * prompt_tokens)

    def _tenant_decoded(self, c: SimCall, tokens: int) -> None:
        if self.fair is not None and tokens:
            self.vtc = charge(self.fair, self.vtc, c.prog.tenant, DECODE_COST * tokens)

    def _fair_best_waiting(self, e: SimEngine) -> SimCall | None:
        """The best waiting call of the backlogged tenant with the smallest counter."""
        tops: dict[str, SimCall] = {}
        for t, wh in e.theaps.items():
            while wh:
                _, _, _, ver, c = wh[0]
                if c.state != WAITING or c.ver != ver:
                    heapq.heappop(wh)
                    continue
                tops[t] = c
                break
        pick = pick_tenant(self.vtc, tops)
        return None if pick is None else tops[pick]

    def _tenant_protects(self, waiting: SimCall | None, running: SimCall) -> bool:
        """Whether fair share forbids `waiting` to preempt `running` (another tenant's call
        whose counter is no higher than the waiting call's tenant's)."""
        if self.fair is None or waiting is None:
            return False
        wt, rt = waiting.prog.tenant, running.prog.tenant
        return wt != rt and self.vtc.get(rt, 0.0) <= self.vtc.get(wt, 0.0)
