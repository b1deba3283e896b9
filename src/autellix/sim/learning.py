"""The `gittins` policy in the simulator: class labels, size hints, and learning the index online.

What the live scheduler reads from Postgres history, the simulator learns from the programs
finished so far in the same run (`GittinsHistory`; before the first `refresh_every` finish the
tables hold only the warm-up prior). A call is ranked by the curve current when it was issued;
later refreshes apply to later calls (a running call does not change level because a table was
rebuilt, only because its own service moved along its curve).

Class labels (`classes`): "kind" gives every program its workload kind (sharegpt, bfcl, lats),
"none" gives none (global distribution only), "shuffled" gives each program the kind of a random
other program (labels present but carrying no information).

Hints (`hints`): with sigma set, every call is issued with a hint of its program's remaining
output tokens times exp(sigma * Z), Z standard normal and drawn per call from the seed (the same
in every policy's run, 0 = exact). The scheduler cannot check a hint until its program finishes,
so hints are learned from, never trusted (`autellix.policy.gittins`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from autellix.policy.gittins import GittinsHistory
from autellix.sim.state import SimCall, SimProgram, SimState

CLASS_MODES = ("kind", "none", "shuffled")


def assign_classes(progs: Sequence[SimProgram], mode: str, seed: int) -> None:
    """Set each program's class label for the given mode (see module docstring)."""
    if mode not in CLASS_MODES:
        raise ValueError(f"classes must be one of {', '.join(CLASS_MODES)}, not {mode!r}")
    if mode == "none":
        for p in progs:
            p.pclass = ""
    elif mode == "shuffled":
        rng = random.Random(seed * 7919 + 17)
        kinds = [p.spec.kind for p in progs]
        for p in progs:
            p.pclass = rng.choice(kinds)


def noisy_hint(remaining: int, sigma: float, seed: int, uid: int) -> float:
    """The remaining output tokens with log-normal noise of standard deviation `sigma`."""
    if sigma <= 0:
        return float(remaining)
    z = random.Random(seed * 1_000_003 + uid).gauss(0.0, 1.0)
    return float(remaining) * math.exp(sigma * z)


class GittinsLearning(SimState):
    """Issue-time index lookups and the online history of the gittins policy."""

    def _gittins_issue(self, c: SimCall) -> float:
        """Pick the call's curve (class, hint) and return its effective size at issue."""
        tables = self.gtables
        assert tables is not None
        prog = c.prog
        if self.hint_sigma is not None:
            c.hint = noisy_hint(prog.remaining_out, self.hint_sigma, self.seed, c.uid)
            prog.hints.append((c.hint, prog.remaining_out))
        look = tables.lookup(prog.pclass, c.base, hint=c.hint, since_hint=0.0)
        c.gcurve = look.curve
        c.goff = c.base if look.curve.source.startswith("hint") else 0.0
        return look.effective

    def _gittins_effective(self, c: SimCall, value: float) -> float:
        """The effective size of a call at priority value `value` (base + used)."""
        curve = c.gcurve
        assert curve is not None
        return curve.effective_of(max(0.0, value - c.goff))

    def _gittins_next(self, c: SimCall, value: float) -> float:
        """The next priority value at which the call's effective size may change."""
        curve = c.gcurve
        assert curve is not None
        return curve.next_change(max(0.0, value - c.goff)) + c.goff

    def _gittins_finished(self, prog: SimProgram) -> None:
        """Learn from a finished program; rebuild the tables at the bounded rate."""
        hist = self.ghistory
        assert hist is not None
        out = prog.spec.output_tokens
        gcfg = self.gittins
        assert gcfg is not None
        size = prog.service.critical if gcfg.attained == "atlas" else prog.service.completed
        hist.add(prog.pclass, size, out)
        for hint, remaining in prog.hints:
            hist.add_hint(prog.pclass, hint, remaining, out)
        if hist.due():
            self.gtables = hist.tables()


def new_history(sim: SimState) -> GittinsHistory | None:
    """The run's history (None unless the policy is gittins)."""
    return GittinsHistory(sim.gittins) if sim.gittins is not None else None
