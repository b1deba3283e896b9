"""A call's time split into hops from the services' stamps and the caller's clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from autellix.bench.callpath import CallPath, call_path, summarize
from autellix.wire.protocol import Timing

T0 = datetime(2026, 12, 6, 1, 0, tzinfo=UTC)


def _at(ms: float) -> datetime:
    return T0 + timedelta(milliseconds=ms)


def test_autellix_call_is_split_into_its_hops() -> None:
    timing = Timing(
        accepted_at=_at(2),
        dispatched_at=_at(5),
        started_at=_at(45),
        finished_at=_at(1045),
        queue_s=0.043,
        run_s=1.0,
    )
    # sent at 0 ms, answer in hand at 1,049 ms
    p = call_path(timing, latency_s=1.049, received_at=_at(1049))
    assert p.to_frontend == pytest.approx(0.002)
    assert p.scheduling == pytest.approx(0.003)
    assert p.engine_queue == pytest.approx(0.040)
    assert p.engine == pytest.approx(1.000)
    assert p.to_client == pytest.approx(0.004)
    assert p.control == pytest.approx(0.009)  # everything but the engine and its queue
    total = p.to_frontend + p.scheduling + p.engine_queue + p.engine + p.to_client
    assert total == pytest.approx(p.latency)


def test_plain_vllm_call_is_all_engine() -> None:
    timing = Timing(accepted_at=_at(0), finished_at=_at(300), queue_s=0.1, run_s=0.2)
    p = call_path(timing, latency_s=0.3, received_at=_at(300))
    assert p == CallPath(latency=0.3, engine=0.3)
    assert p.control == 0


def test_clock_skew_never_gives_negative_hops() -> None:
    timing = Timing(
        accepted_at=_at(-1),  # stamped a hair before the caller's own send time
        dispatched_at=_at(3),
        started_at=_at(2),  # started "before" dispatched (two hosts' clocks)
        finished_at=_at(10),
        queue_s=0.0,
        run_s=0.008,
    )
    p = call_path(timing, latency_s=0.011, received_at=_at(11))
    assert min(p.to_frontend, p.scheduling, p.engine_queue, p.engine, p.to_client) >= 0


def test_summary_has_percentiles_per_hop_in_ms() -> None:
    paths = [CallPath(latency=0.1 * i, engine=0.05 * i, scheduling=0.001 * i) for i in range(1, 11)]
    s = summarize(paths)
    assert s["latency"]["calls"] == 10
    assert s["latency"]["mean_ms"] == pytest.approx(550)
    assert s["engine"]["p50_ms"] == pytest.approx(275)
    assert s["scheduling"]["p99_ms"] == pytest.approx(9.91)
    assert s["control"]["mean_ms"] == pytest.approx(275)
    assert "to_client" not in s  # no call had that hop
    assert summarize([]) == {}
