"""Virtual-token-counter fair share across tenants (`autellix.policy.fair_share`)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autellix.policy.fair_share import (
    FairShareConfig,
    charge,
    on_return,
    parse_weights,
    pick_tenant,
    share_note,
)


def _serve(cfg: FairShareConfig, tenants: list[str], rounds: int, unit: float = 10.0) -> dict:
    """Both tenants always backlogged: serve `unit` to the picked tenant each round."""
    counters: dict[str, float] = {}
    got = dict.fromkeys(tenants, 0.0)
    for _ in range(rounds):
        t = pick_tenant(counters, tenants)
        assert t is not None
        counters = charge(cfg, counters, t, unit)
        got[t] += unit
    return got


def test_backlogged_tenants_share_in_proportion_to_their_weights() -> None:
    got = _serve(FairShareConfig({"a": 2.0, "b": 1.0}), ["a", "b"], 300)
    assert got["a"] / got["b"] == pytest.approx(2.0, rel=0.02)
    equal = _serve(FairShareConfig(), ["heavy", "light"], 300)
    assert equal["heavy"] == pytest.approx(equal["light"], rel=0.02)


def test_a_returning_tenant_starts_at_the_current_minimum_without_banked_credit() -> None:
    cfg = FairShareConfig()
    counters = {"a": 500.0, "b": 40.0}  # b was idle while a was served alone
    lifted = on_return(counters, "b", backlogged=["a"])
    assert lifted["b"] == 500.0  # no credit for the idle time
    assert on_return({"a": 10.0, "b": 40.0}, "b", ["a"])["b"] == 40.0  # never lowered
    assert on_return({}, "c", [])["c"] == 0.0
    # after the lift the two alternate instead of b being served alone until it catches up
    first = [pick_tenant(lifted, ["a", "b"])]
    lifted = charge(cfg, lifted, first[0], 10.0)  # type: ignore[arg-type]
    assert pick_tenant(lifted, ["a", "b"]) != first[0]


def test_weights_parse_and_refuse_bad_items() -> None:
    assert parse_weights("a=2, b=1") == {"a": 2.0, "b": 1.0}
    assert parse_weights("") == {}
    for bad in ("a", "a=0", "a=-1", "=2", "a=x", "a=1,a=2", "a=inf"):
        with pytest.raises(ValueError):
            parse_weights(bad)
    with pytest.raises(ValueError):
        FairShareConfig({"a": 0.0})
    note = share_note(FairShareConfig({"a": 2.0}), {"a": 30.0, "b": 10.0}, "a")
    assert "weight 2" in note and "+20.0 over the lowest" in note


@given(st.text(max_size=40))
def test_parse_weights_gives_weights_or_a_value_error(text: str) -> None:
    try:
        weights = parse_weights(text)
    except ValueError:
        return
    assert all(w > 0 for w in weights.values())


@given(
    st.lists(st.tuples(st.sampled_from("abc"), st.floats(0, 1e4)), max_size=50),
    st.dictionaries(st.sampled_from("abc"), st.floats(0.1, 10), max_size=3),
)
def test_counters_only_grow_and_the_pick_has_the_lowest(charges, weights) -> None:
    cfg = FairShareConfig(weights)
    counters: dict[str, float] = {}
    for tenant, service in charges:
        new = charge(cfg, counters, tenant, service)
        assert all(new[t] >= counters.get(t, 0.0) for t in new)
        counters = new
    pick = pick_tenant(counters, "abc")
    assert pick is not None and counters.get(pick, 0.0) == min(counters.get(t, 0.0) for t in "abc")
