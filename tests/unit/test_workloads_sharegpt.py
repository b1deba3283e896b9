"""ShareGPT loader on a hand-written fixture in the public file's format."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from autellix.workloads import WorkloadOptions, load_workload
from autellix.workloads.sharegpt import load_sharegpt, synthetic_sharegpt
from autellix.workloads.streaming import _iter_array_raw, iter_json_array, sample
from autellix.workloads.tokens import MESSAGE_OVERHEAD, CharEstimate

FIX = Path(__file__).resolve().parents[1] / "fixtures"
SHAREGPT = FIX / "sharegpt_small.json"
OPTS = WorkloadOptions()


def _est(text: str) -> int:
    return math.ceil(len(text) / 4)


def _by_source_id(progs):
    return {p.meta["id"]: p for p in progs}


def test_one_call_per_assistant_turn_with_growing_history() -> None:
    progs = load_sharegpt([SHAREGPT], None, np.random.default_rng(0), CharEstimate(), OPTS)
    by = _by_source_id(progs)
    # fx3 has no assistant turn and fx6 no turn at all: no program
    assert set(by) == {"fx1_0", "fx2_0", "fx4_0", "fx5_1"}
    assert [len(by[k].calls) for k in ("fx1_0", "fx2_0", "fx4_0", "fx5_1")] == [2, 1, 3, 3]
    conv = json.loads(SHAREGPT.read_text())[0]["conversations"]
    h1, g1, h2, g2 = (_est(m["value"]) for m in conv)
    c0, c1 = by["fx1_0"].calls
    assert (c0.prompt_tokens, c0.output_tokens, c0.prefix_tokens) == (
        h1 + 2 * MESSAGE_OVERHEAD,
        g1,
        0,
    )
    assert c1.prefix_tokens == c0.prompt_tokens + c0.output_tokens
    assert c1.prompt_tokens == c1.prefix_tokens + h2 + 2 * MESSAGE_OVERHEAD
    assert c1.output_tokens == g2 and c1.parents == (0,) and c1.thread_id == 0
    assert not by["fx1_0"].multi_threaded


def test_system_turn_counts_and_empty_reply_is_zero_tokens() -> None:
    progs = load_sharegpt([SHAREGPT], None, np.random.default_rng(0), CharEstimate(), OPTS)
    by = _by_source_id(progs)
    conv = json.loads(SHAREGPT.read_text())[1]["conversations"]
    sys_t, user_t = _est(conv[0]["value"]), _est(conv[1]["value"])
    assert by["fx2_0"].calls[0].prompt_tokens == sys_t + user_t + 3 * MESSAGE_OVERHEAD
    # a conversation opening with the assistant: its first call has only the template prompt
    fx4 = by["fx4_0"].calls
    assert fx4[0].prompt_tokens == MESSAGE_OVERHEAD and fx4[-1].output_tokens == 0


def test_context_limit_ends_the_program() -> None:
    small = WorkloadOptions(max_context_tokens=60)
    progs = load_sharegpt([SHAREGPT], None, np.random.default_rng(0), CharEstimate(), small)
    for p in progs:
        assert all(c.prompt_tokens + c.output_tokens <= 60 for c in p.calls)
    full = {
        p.meta["id"]: len(p.calls)
        for p in load_sharegpt([SHAREGPT], None, np.random.default_rng(0), CharEstimate(), OPTS)
    }
    cut = {p.meta["id"]: len(p.calls) for p in progs}
    assert sum(cut.values()) < sum(full.values())


def test_sampling_is_seeded_and_bounded() -> None:
    def ids(seed: int, n: int, method: str = "reservoir") -> list[str]:
        rng = np.random.default_rng(seed)
        progs = load_sharegpt([SHAREGPT], n, rng, CharEstimate(), OPTS, method)
        return [p.meta["id"] for p in progs]

    assert ids(1, 2) == ids(1, 2)
    assert len(ids(1, 2)) == 2
    assert {tuple(sorted(ids(s, 2))) for s in range(12)} != {tuple(sorted(ids(0, 2)))}


def test_head_sampling_stops_reading(tmp_path: Path) -> None:
    """`head` never parses past the N-th conversation: a file broken after it still loads."""
    good = json.loads(SHAREGPT.read_text()) * 2000  # ~2 MB before the break: past any buffer
    text = json.dumps(good)[:-1] + ', {"id": "broken", "conversations": [ {"from": '
    path = tmp_path / "truncated.json"
    path.write_text(text)
    progs = load_sharegpt([path], 2, np.random.default_rng(0), CharEstimate(), OPTS, "head")
    assert len(progs) == 2
    with pytest.raises(Exception):  # noqa: B017 - ijson or json error: the file is truncated
        load_sharegpt([path], 2, np.random.default_rng(0), CharEstimate(), OPTS, "reservoir")


def test_streaming_parsers_agree_with_json(tmp_path: Path) -> None:
    """The fallback parser (no ijson) and ijson yield the same items, across chunk borders."""
    rng = np.random.default_rng(3)
    items = [
        {
            "id": f"x{i}",
            "conversations": [{"from": "human", "value": "é" * int(rng.integers(1, 900))}],
        }
        for i in range(3000)
    ]
    path = tmp_path / "big.json"
    path.write_text(json.dumps(items, ensure_ascii=False))
    assert path.stat().st_size > 2 * (1 << 20)  # spans several 1 MiB chunks
    assert list(_iter_array_raw(path)) == items
    assert list(iter_json_array(path)) == items


def test_reservoir_is_uniform_enough() -> None:
    counts = np.zeros(20)
    for s in range(400):
        for x in sample(range(20), 5, np.random.default_rng(s)):
            counts[x] += 1
    assert counts.min() > 60 and counts.max() < 140  # expected 100 each


def test_synthetic_matches_paper_means() -> None:
    progs = synthetic_sharegpt(3000, np.random.default_rng(0), OPTS)
    calls = [c for p in progs for c in p.calls]
    outs = np.mean([c.output_tokens for c in calls])
    # new (non-prefix) prompt tokens per call: the paper's 256 is the user's new text
    new = np.mean([c.prompt_tokens - c.prefix_tokens for c in calls])
    n_calls = np.array([len(p.calls) for p in progs])
    assert 240 <= outs <= 300
    assert 220 <= new <= 300
    assert 5.0 <= n_calls.mean() <= 7.5
    assert np.percentile(n_calls, 99) > 2.5 * n_calls.mean()  # long-tailed


def test_workload_entry_point_marks_sources() -> None:
    wl = load_workload("sharegpt", 3, seed=0, data=[SHAREGPT])
    assert wl.sources == {"sharegpt": "sharegpt_small.json"} and not wl.synthetic
    assert len(wl.programs) == 3 and all(p.kind == "sharegpt" for p in wl.programs)
    syn = load_workload("sharegpt", 5, seed=0)
    assert syn.synthetic and syn.sources == {"sharegpt": "synthetic"}
    assert len({p.program_id for p in wl.programs}) == 3
