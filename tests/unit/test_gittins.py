"""The Gittins index curves (`autellix.policy.gittins`): the vectorised index equals the
definition, it is LAS-like on heavy tails and FCFS-like on light ones, lookups fall back as
documented, hysteresis holds a level, and the history refreshes at its bounded rate."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from autellix.policy import MLFQConfig
from autellix.policy.gittins import (
    GLOBAL_CLASS,
    GittinsConfig,
    GittinsHistory,
    Sample,
    build_curve,
    hint_bucket,
    index_at,
    level_with_hysteresis,
)


def _brute_index(samples: list[tuple[float, float]], a: float) -> float:
    """sup over thresholds b of E[w 1(S <= b) | S > a] / E[min(S, b) - a | S > a], b scanned
    over a fine grid as well as every sample size (the definition, O(n^2))."""
    alive = [(s, w) for s, w in samples if s > a]
    if not alive:
        return 0.0
    cands = sorted({s for s, _ in alive} | {a + k * 0.37 for k in range(1, 200)})
    best = 0.0
    for b in cands:
        num = sum(w for s, w in alive if s <= b)
        den = sum(min(s, b) - a for s, _ in alive)
        if den > 0:
            best = max(best, num / den)
    return best


def test_vectorised_index_equals_the_definition() -> None:
    rng = random.Random(3)
    for _ in range(20):
        n = rng.randint(1, 25)
        samples = sorted((float(rng.randint(1, 60)), rng.uniform(0.1, 2.0)) for _ in range(n))
        sizes = np.array([s for s, _ in samples])
        weights = np.array([w for _, w in samples])
        grid = np.array([0.0, 1.0, 5.0, 17.5, 40.0, 59.0, 80.0])
        got = index_at(sizes, weights, grid)
        for g, a in zip(got, grid, strict=True):
            assert g == pytest.approx(_brute_index(samples, float(a)), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("weighting", ["token", "program"])
def test_a_deterministic_size_has_its_size_as_effective_size(weighting: str) -> None:
    cfg = GittinsConfig(weighting=weighting, min_samples=1)
    curve = build_curve([Sample(500.0, cfg.weight(500.0))] * 30, cfg, "class x")
    assert curve.effective_of(0.0) == pytest.approx(500.0)
    if weighting == "program":  # the remaining size: FCFS-like, it only shrinks
        assert curve.effective_of(300.0) == pytest.approx(500.0 - curve.grid[curve.point(300)])


def test_heavy_tail_is_las_like_and_light_tail_fcfs_like() -> None:
    cfg = GittinsConfig(weighting="program", min_samples=1)
    rng = random.Random(5)
    heavy = [Sample(20.0 * rng.paretovariate(1.1), 1.0) for _ in range(2000)]
    light = [Sample(rng.uniform(900.0, 1100.0), 1.0) for _ in range(2000)]
    h = build_curve(heavy, cfg, "heavy")
    li = build_curve(light, cfg, "light")
    # heavy tail: the longer it ran, the more it has left (priority falls, as LAS)
    assert h.effective_of(500.0) > h.effective_of(100.0) > h.effective_of(0.0)
    # light tail: the longer it ran, the less it has left (priority rises, as FCFS)
    assert li.effective_of(950.0) < li.effective_of(500.0) < li.effective_of(0.0)


def test_lookup_falls_back_to_global_then_uses_the_class() -> None:
    cfg = GittinsConfig(weighting="program", min_samples=10, refresh_every=1)
    hist = GittinsHistory(cfg)
    for _ in range(30):
        hist.add("chat", 100.0, 100.0)
    for _ in range(5):
        hist.add("search", 5000.0, 5000.0)
    t = hist.tables()
    assert t.curve_for("chat").source == "class chat"
    assert t.curve_for("search").source == "global"  # 5 samples < min_samples
    assert t.curve_for(None).source == "global"
    assert t.curve_for("unknown").source == "global"
    assert t.lookup("chat", 0.0).effective == pytest.approx(100.0)
    assert GLOBAL_CLASS in t.curves


def test_hints_use_their_bucket_once_learned_and_the_face_value_before() -> None:
    cfg = GittinsConfig(weighting="program", min_samples=10, refresh_every=1)
    hist = GittinsHistory(cfg)
    hist.add("chat", 100.0, 100.0)
    before = hist.tables().lookup("chat", 0.0, hint=3000.0)
    assert before.curve.source.startswith("hint prior")
    assert 3000.0 <= before.effective <= 3000.0 * cfg.hint_bucket
    # hints that are 10x too large: the bucket learns what really remained
    for _ in range(20):
        hist.add_hint("chat", 3000.0, 300.0, 300.0)
    after = hist.tables().lookup("chat", 0.0, hint=3000.0)
    assert after.curve.source == f"hint bucket {hint_bucket(cfg, 3000.0)} of chat"
    assert after.effective == pytest.approx(300.0)
    # read at the service attained since the hint, not the program's total
    later = hist.tables().lookup("chat", 10_000.0, hint=3000.0, since_hint=100.0)
    assert later.attained == 100.0


def test_the_history_rebuilds_at_a_bounded_rate() -> None:
    cfg = GittinsConfig(refresh_every=5)
    hist = GittinsHistory(cfg)
    assert hist.due()
    v = hist.tables().version
    for i in range(4):
        hist.add("c", 10.0 + i, 10.0)
        assert not hist.due()
    hist.add("c", 20.0, 10.0)
    assert hist.due()
    assert hist.tables().version == v + 1


def test_hysteresis_holds_a_level_until_the_margin_is_passed() -> None:
    mlfq = MLFQConfig()  # boundaries 64, 128, ...
    assert level_with_hysteresis(mlfq, 130.0, None, 1.25) == 2
    assert level_with_hysteresis(mlfq, 130.0, 1, 1.25) == 1  # 130 < 128 * 1.25
    assert level_with_hysteresis(mlfq, 170.0, 1, 1.25) == 2
    assert level_with_hysteresis(mlfq, 60.0, 1, 1.25) == 1  # 60 >= 64 / 1.25
    assert level_with_hysteresis(mlfq, 40.0, 1, 1.25) == 0
    assert level_with_hysteresis(mlfq, 130.0, 1, 1.0) == 2


def test_curves_are_finite_and_change_only_at_grid_points() -> None:
    cfg = GittinsConfig(min_samples=1)
    rng = random.Random(9)
    curve = build_curve(
        [Sample(float(rng.randint(5, 3000)), 1.0 / 100) for _ in range(300)], cfg, "x"
    )
    assert all(math.isfinite(e) and e > 0 for e in curve.effective)
    a = 0.0
    while math.isfinite(nxt := curve.next_change(a)):
        assert nxt > a
        assert curve.effective_of(nxt - 1e-9) == curve.effective_of(a)
        a = nxt


def test_config_refuses_unknown_choices() -> None:
    with pytest.raises(ValueError, match="weighting"):
        GittinsConfig(weighting="tokens")
    with pytest.raises(ValueError, match="attained"):
        GittinsConfig(attained="critical")
