"""BFCL loader on hand-written fixtures in the BFCL v3/v4 JSON Lines format."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from autellix.workloads import WorkloadOptions, load_workload
from autellix.workloads.bfcl import load_bfcl, synthetic_bfcl
from autellix.workloads.tokens import MESSAGE_OVERHEAD, CharEstimate

FIX = Path(__file__).resolve().parents[1] / "fixtures"
MULTI = FIX / "BFCL_v3_multi_turn_fixture.json"
SIMPLE = FIX / "BFCL_v3_simple_fixture.json"
OPTS = WorkloadOptions()


def _load(paths, opts=OPTS, seed=0):
    progs = load_bfcl(paths, None, np.random.default_rng(seed), CharEstimate(), opts)
    return {p.meta["id"]: p for p in progs}


def test_multi_turn_calls_per_turn_from_path() -> None:
    by = _load([MULTI])
    # per turn: its share of `path` function-call steps, then a final answer
    # fx0: 3 turns, 4 path calls -> steps [2, 1, 1] -> 3 + 2 + 2 calls; fx1 the same (one turn
    # is empty, as in BFCL's miss_func category); fx2: 1 turn, empty path -> 1 call
    assert {k: len(p.calls) for k, p in by.items()} == {
        "multi_turn_base_fx0": 7,
        "multi_turn_base_fx1": 7,
        "multi_turn_base_fx2": 1,
    }
    for p in by.values():
        assert p.kind == "bfcl" and not p.multi_threaded
        for i, c in enumerate(p.calls):
            assert c.parents == ((i - 1,) if i else ())
            assert 1 <= c.output_tokens <= OPTS.bfcl_output_cap
            if i:
                prev = p.calls[i - 1]
                assert c.prefix_tokens == prev.prompt_tokens + prev.output_tokens
                assert c.prompt_tokens > c.prefix_tokens


def test_prompt_carries_docs_and_user_turn() -> None:
    by = _load([MULTI])
    entry = json.loads(MULTI.read_text().splitlines()[0])
    user = math.ceil(len(entry["question"][0][0]["content"]) / 4)
    docs = OPTS.bfcl_class_doc_tokens * len(entry["involved_classes"])
    first = by["multi_turn_base_fx0"].calls[0]
    assert first.prompt_tokens == OPTS.bfcl_system_tokens + docs + user + 2 * MESSAGE_OVERHEAD
    assert first.prefix_tokens == 0


def test_tool_time_only_after_function_steps() -> None:
    opts = WorkloadOptions(bfcl_tool_s=0.5, bfcl_think_s=0.0)
    calls = _load([MULTI], opts)["multi_turn_base_fx0"].calls
    # turn 1: step, step, answer | turn 2: step, answer | turn 3: step, answer
    after_step = [1, 2, 4, 6]
    assert all(calls[i].delay_s > 0 for i in after_step)
    assert all(calls[i].delay_s == 0 for i in (0, 3, 5))
    no_tool = _load([MULTI], WorkloadOptions(bfcl_tool_s=0.0))["multi_turn_base_fx0"].calls
    assert all(c.delay_s == 0 for c in no_tool)


def test_single_turn_entries_count_function_docs() -> None:
    by = _load([SIMPLE])
    assert set(by) == {"simple_fx0", "simple_fx1"}
    e = json.loads(SIMPLE.read_text().splitlines()[0])
    docs = math.ceil(len(json.dumps(e["function"])) / 4)
    user = math.ceil(len(e["question"][0][0]["content"]) / 4)
    (c,) = by["simple_fx0"].calls
    assert c.prompt_tokens == OPTS.bfcl_system_tokens + docs + user + 2 * MESSAGE_OVERHEAD


def test_multi_turn_preferred_when_files_are_mixed() -> None:
    progs = load_bfcl([SIMPLE, MULTI], 5, np.random.default_rng(0), CharEstimate(), OPTS)
    assert {p.meta["id"] for p in progs} == {
        "multi_turn_base_fx0",
        "multi_turn_base_fx1",
        "multi_turn_base_fx2",
    }


def test_deterministic_for_a_seed() -> None:
    a = load_workload("bfcl", 3, seed=4, data=[MULTI]).programs
    b = load_workload("bfcl", 3, seed=4, data=[MULTI]).programs
    c = load_workload("bfcl", 3, seed=5, data=[MULTI]).programs
    assert a == b
    assert [p.calls for p in a] != [p.calls for p in c]


def test_synthetic_matches_paper_means() -> None:
    progs = synthetic_bfcl(3000, np.random.default_rng(0), OPTS)
    calls = [c for p in progs for c in p.calls]
    n = np.array([len(p.calls) for p in progs])
    assert abs(n.mean() - 10.75) / 10.75 < 0.1
    assert abs(np.mean([c.prompt_tokens for c in calls]) - 735) / 735 < 0.1
    assert abs(np.mean([c.output_tokens for c in calls]) - 34) / 34 < 0.1
    assert np.percentile(n, 99) > 2 * n.mean()
