"""LATS tree-search generator: DAG shape, threads, parents and the paper's sizes."""

from __future__ import annotations

import numpy as np

from autellix.workloads import WorkloadOptions
from autellix.workloads.lats import lats_program, synthetic_lats

OPTS = WorkloadOptions()


def test_iteration_structure_threads_and_parents() -> None:
    k = OPTS.lats_children
    for s in range(20):
        p = lats_program("t", np.random.default_rng(s), OPTS)
        assert p.multi_threaded and len(p.calls) % (2 * k + 1) == 0
        prev_select = None
        for it in range(len(p.calls) // (2 * k + 1)):
            base = it * (2 * k + 1)
            expands = p.calls[base : base + k]
            evals = p.calls[base + k : base + 2 * k]
            select = p.calls[base + 2 * k]
            assert [c.thread_id for c in expands] == list(range(k))
            want = () if prev_select is None else (prev_select,)
            assert all(c.parents == want for c in expands)
            for t, e in enumerate(evals):
                assert e.parents == (base + t,) and e.thread_id == t
            assert select.parents == tuple(range(base + k, base + 2 * k))
            assert select.thread_id == 0
            prev_select = select.index
        for c in p.calls:
            assert all(q < c.index for q in c.parents)
            assert 0 <= c.prefix_tokens <= c.prompt_tokens
        assert p.calls[0].prefix_tokens == 0


def test_sizes_match_paper_and_are_long_tailed() -> None:
    progs = synthetic_lats(600, np.random.default_rng(1), OPTS)
    n = np.array([len(p.calls) for p in progs])
    calls = [c for p in progs for c in p.calls]
    assert abs(n.mean() - 159.7) / 159.7 < 0.1
    assert abs(np.mean([c.prompt_tokens for c in calls]) - 467) / 467 < 0.05
    assert abs(np.mean([c.output_tokens for c in calls]) - 73) / 73 < 0.05
    assert np.percentile(n, 99) > 2.5 * n.mean()
    assert n.min() == 2 * OPTS.lats_children + 1


def test_tool_time_sits_before_evaluations() -> None:
    p = lats_program("t", np.random.default_rng(0), OPTS)
    k = OPTS.lats_children
    for c in p.calls:
        pos = c.index % (2 * k + 1)
        assert (c.delay_s > 0) == (k <= pos < 2 * k)
    quiet = lats_program("t", np.random.default_rng(0), WorkloadOptions(lats_tool_s=0.0))
    assert all(c.delay_s == 0 for c in quiet.calls)


def test_deterministic() -> None:
    a = synthetic_lats(5, np.random.default_rng(7), OPTS)
    b = synthetic_lats(5, np.random.default_rng(7), OPTS)
    assert a == b
