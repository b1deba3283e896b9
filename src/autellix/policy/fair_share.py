"""Tenant fair share: which tenant's calls go next, by virtual token counters (VTC).

Two levels. Across tenants, each tenant has a counter of the service it received divided by its
weight (`charge`); among the tenants with calls waiting, the one with the smallest counter goes
next (`pick_tenant`), so backlogged tenants receive service in proportion to their weights
whatever load each offers. Within a tenant, the program policy (PLAS, ATLAS, gittins, ...) orders
its calls as it would alone.

No banked credit: a tenant that was idle does not come back with the low counter it left with
(it would then be served alone until it caught up, starving everyone else); when it becomes
backlogged again its counter is lifted to the current minimum among the backlogged tenants
(`on_return`), as in Sheng et al., "Fairness in Serving Large Language Models" (OSDI 2024).

Weights come from configuration (`parse_weights("a=2,b=1")`); a tenant not named has
`default_weight`. The functions are pure: counters are plain mappings, returned anew.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

Counters = Mapping[str, float]


@dataclass(frozen=True, slots=True)
class FairShareConfig:
    """Tenant weights (service share is proportional to weight among backlogged tenants)."""

    weights: Mapping[str, float] = field(default_factory=dict)
    default_weight: float = 1.0

    def __post_init__(self) -> None:
        bad = {t: w for t, w in self.weights.items() if not w > 0}
        if bad or not self.default_weight > 0:
            raise ValueError(f"tenant weights must be positive: {bad or self.default_weight}")

    def weight(self, tenant: str) -> float:
        return float(self.weights.get(tenant, self.default_weight))


def parse_weights(text: str) -> dict[str, float]:
    """`"a=2,b=1"` -> `{"a": 2.0, "b": 1.0}`; ValueError names the bad item."""
    out: dict[str, float] = {}
    for item in filter(None, (x.strip() for x in text.split(","))):
        name, sep, value = item.partition("=")
        name = name.strip()
        try:
            weight = float(value)
        except ValueError:
            weight = float("nan")
        if not sep or not name or not weight > 0 or weight == float("inf"):
            raise ValueError(f"tenant weight {item!r}: expected NAME=POSITIVE_NUMBER")
        if name in out:
            raise ValueError(f"tenant {name!r} weighted twice")
        out[name] = weight
    return out


def charge(
    cfg: FairShareConfig, counters: Counters, tenant: str, service: float
) -> dict[str, float]:
    """Counters after `tenant` received `service` units (its counter grows by service/weight)."""
    out = dict(counters)
    out[tenant] = out.get(tenant, 0.0) + max(0.0, service) / cfg.weight(tenant)
    return out


def on_return(counters: Counters, tenant: str, backlogged: Iterable[str]) -> dict[str, float]:
    """Counters when `tenant` becomes backlogged again: lifted to the smallest counter of the
    tenants already backlogged (never lowered; unchanged when none is)."""
    others = [counters.get(t, 0.0) for t in backlogged if t != tenant]
    out = dict(counters)
    if others:
        out[tenant] = max(out.get(tenant, 0.0), min(others))
    else:
        out.setdefault(tenant, 0.0)
    return out


def pick_tenant(counters: Counters, backlogged: Iterable[str]) -> str | None:
    """The backlogged tenant to serve next: smallest counter, ties by name (None: nobody)."""
    return min(backlogged, key=lambda t: (counters.get(t, 0.0), t), default=None)


def share_note(cfg: FairShareConfig, counters: Counters, tenant: str) -> str:
    """A tenant's part in a decision, in words (for decision reasons and `calls explain`)."""
    low = min(counters.values(), default=0.0)
    mine = counters.get(tenant, 0.0)
    return (
        f"tenant {tenant}: weight {cfg.weight(tenant):g}, virtual counter {mine:.1f} "
        f"({mine - low:+.1f} over the lowest)"
    )
