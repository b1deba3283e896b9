"""`backend_priority`: the engine's rank key `(level, tiebreak)` as one int for vLLM's queue."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from autellix.services.engine.call import backend_priority

levels = st.integers(min_value=0, max_value=50)
# epoch seconds (program arrival, call issue) or service units, at the ms resolution kept
tiebreaks = st.integers(min_value=0, max_value=4_000_000_000_000).map(lambda ms: ms / 1000.0)


@given(levels, tiebreaks, levels, tiebreaks)
def test_orders_like_the_rank_key(la: int, ta: float, lb: int, tb: float) -> None:
    a, b = backend_priority(la, ta), backend_priority(lb, tb)
    assert (a < b) == ((la, ta) < (lb, tb))
    assert (a == b) == ((la, ta) == (lb, tb))
    assert 0 <= a < 2**63  # vLLM carries it as an int64


def test_examples() -> None:
    assert backend_priority(0, 0.0) == 0
    assert backend_priority(0, 1_764_000_000.25) < backend_priority(1, 0.0)
    assert backend_priority(2, 3.0) - backend_priority(2, 1.0) == 2000
    # out-of-range inputs are clamped, never reorder levels
    assert backend_priority(-1, -5.0) == 0
    assert backend_priority(1, 1e30) < backend_priority(2, 0.0)
