"""Tenants in the simulator (`autellix.sim.tenants`): assignment by offered-load share, and the
fair share across tenants (`tenant_weights`) protecting a light tenant from a heavy one."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autellix.sim import load_profile, simulate
from autellix.sim.sweep import analytic_capacity
from autellix.sim.tenants import parse_shares, tenant_of
from autellix.workloads import load_workload
from autellix.workloads.arrivals import with_arrivals

SPEC = "heavy:5,light:0.4"


def _light_avg(policy: str, **opts: object) -> tuple[float, float]:
    progs = load_workload("sharegpt", 200, 3).programs
    rate = analytic_capacity(progs, load_profile("cpu-tiny")) * 5.4
    timed = with_arrivals(progs, rate, 3, "poisson", 3.0)
    light = {
        p.program_id for p in timed if tenant_of(p.program_id, parse_shares(SPEC), 3) == "light"
    }
    run = simulate(timed, policy=policy, seed=3, **opts)
    lat = [o.latency_s for o in run.programs if o.program_id in light]
    assert 5 <= len(lat) <= 40  # about 0.4 / 5.4 of the programs
    return sum(lat) / len(lat), run.makespan_s


@pytest.mark.parametrize("policy", ["fcfs", "gittins"])
def test_fair_share_protects_the_light_tenant_and_is_off_by_default(policy: str) -> None:
    plain = _light_avg(policy)
    assert _light_avg(policy, tenants=SPEC) == plain  # labels alone change nothing
    fair = _light_avg(policy, tenants=SPEC, tenant_weights="heavy=1,light=1")
    assert fair[0] < 0.5 * plain[0]  # light no longer queues behind heavy's backlog
    assert fair[1] == pytest.approx(plain[1], rel=0.1)  # still work-conserving


def test_tenants_are_drawn_per_program_and_bad_specs_are_refused() -> None:
    shares = parse_shares("heavy:10,light:1")
    ids = [f"p{i}" for i in range(2000)]
    light = sum(tenant_of(i, shares, 7) == "light" for i in ids)
    assert 120 < light < 250  # ~1/11 of 2000
    assert [tenant_of(i, shares, 7) for i in ids] == [tenant_of(i, shares, 7) for i in ids]
    for bad in ("", "a", "a:0", "a:x", ":1"):
        with pytest.raises(ValueError):
            parse_shares(bad)
    with pytest.raises(ValueError):
        simulate([], policy="fcfs", tenant_weights="a=0")


@given(st.text(max_size=40))
def test_parse_shares_gives_shares_or_a_value_error(text: str) -> None:
    try:
        shares = parse_shares(text)
    except ValueError:
        return
    assert shares and all(0 < s < float("inf") for s in shares.values())
