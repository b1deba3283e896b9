"""The saturation search's rules (`bench.vllm_saturation`): when a step counts as saturated,
which rate is the capacity, and when a finished benchmark warns that no baseline saturated.
Pure functions over numbers: the search itself runs the real engine (`autellix bench live
--backend vllm` without --rates)."""

from __future__ import annotations

import pytest

from autellix.bench.plain_vllm import is_plain
from autellix.bench.vllm_saturation import (
    SaturationStep,
    baseline_saturated,
    capacity_of,
    saturated,
    saturation_warning,
)


def step(rate: float, ms_per_token: float, tokens_per_s: float) -> SaturationStep:
    return SaturationStep(
        rate=rate,
        programs=8,
        avg_latency_per_token_s=ms_per_token / 1000,
        output_tokens_per_s=tokens_per_s,
        mean_batch=None,
        wall_s=60.0,
    )


def test_latency_doubling_saturates() -> None:
    light = step(0.1, 20.0, 100.0)
    assert not saturated([light])
    assert not saturated([light, step(0.2, 39.0, 200.0)])
    assert saturated([light, step(0.2, 39.0, 200.0), step(0.4, 40.0, 400.0)])


def test_throughput_that_stops_following_the_rate_saturates() -> None:
    light = step(0.1, 20.0, 100.0)
    # the rate doubled; throughput grew 1.8x (80% of the growth): still following
    assert not saturated([light, step(0.2, 25.0, 180.0)])
    # grew 1.5x: half the rate's growth
    assert saturated([light, step(0.2, 25.0, 150.0)])


def test_capacity_is_the_last_rate_before_saturation_with_its_bound() -> None:
    steps = [step(0.1, 20, 100), step(0.2, 22, 200), step(0.4, 60, 260)]
    assert capacity_of(steps, 2) == (0.2, "exact")
    assert capacity_of(steps, 0) == (0.1, "upper")
    assert capacity_of(steps, None) == (0.4, "lower")
    with pytest.raises(ValueError):
        capacity_of([], None)


def run(policy: str, rate: float, ms_per_token: float, mean_batch: float) -> dict[str, object]:
    return {
        "policy": policy,
        "rate": rate,
        "avg_latency_per_token_s": ms_per_token / 1000,
        "engine_work": {"vllm": {"mean_batch": mean_batch, "step_ms": 20.0}},
    }


def test_baseline_saturated_by_batch_or_by_latency() -> None:
    unloaded = [run("vllm-fcfs", 0.1, 20, 1.5), run("vllm-fcfs", 0.3, 22, 1.9)]
    # an Autellix run at a full batch does not count: only baselines say the regime was reached
    unloaded_plus = [*unloaded, run("atlas", 0.3, 80, 16.0)]
    assert baseline_saturated(unloaded_plus, 16, is_plain) is False
    assert baseline_saturated([*unloaded, run("vllm-fcfs", 0.9, 25, 12.5)], 16, is_plain)
    assert baseline_saturated(
        [*unloaded, run("vllm-priority", 0.9, 30, 2.0), run("vllm-priority", 0.1, 14, 1.0)],
        16,
        is_plain,
    )
    assert baseline_saturated([run("atlas", 0.3, 80, 16.0)], 16, is_plain) is None


def test_warning_names_the_batch_and_the_fix() -> None:
    payload = {
        "meta": {"engine": {"max_batch": 16}},
        "runs": [run("vllm-fcfs", 0.06, 20, 1.7), run("vllm-fcfs", 0.07, 21, 1.7)],
    }
    warning = saturation_warning(payload, is_plain)
    assert warning is not None and "no baseline" in warning and "of 16" in warning
    payload["runs"].append(run("vllm-fcfs", 0.5, 50, 14.0))
    assert saturation_warning(payload, is_plain) is None
