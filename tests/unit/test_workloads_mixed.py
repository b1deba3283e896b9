"""Mixed workload, format detection, tokenizer vs estimate, and arrival processes."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from autellix.workloads import load_workload, with_arrivals
from autellix.workloads.detect import detect_format
from autellix.workloads.tokens import CharEstimate, HFTokenizer, make_counter

FIX = Path(__file__).resolve().parents[1] / "fixtures"
SHAREGPT = FIX / "sharegpt_small.json"
MULTI = FIX / "BFCL_v3_multi_turn_fixture.json"
SIMPLE = FIX / "BFCL_v3_simple_fixture.json"


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny word-level tokenizer.json built here (no hub access): one token per word."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["[UNK]", "how", "do", "i", "reverse", "a", "list", "in", "python", "?"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(str(path))
    return path


def test_mixed_synthetic_equal_thirds_interleaved() -> None:
    wl = load_workload("mixed", 30, seed=0)
    kinds = Counter(p.kind for p in wl.programs)
    assert kinds == {"sharegpt": 10, "bfcl": 10, "lats": 10}
    assert wl.synthetic and set(wl.sources.values()) == {"synthetic"}
    first = [p.kind for p in wl.programs[:10]]
    assert len(set(first)) > 1  # shuffled, not grouped by kind
    assert len({p.program_id for p in wl.programs}) == 30
    stats = wl.stats()
    assert stats["lats"]["calls_per_program"] > 5 * stats["sharegpt"]["calls_per_program"]


def test_mixed_uses_files_given_and_lats() -> None:
    wl = load_workload("mixed", 9, seed=0, data=[SHAREGPT, MULTI])
    assert wl.sources == {
        "sharegpt": "sharegpt_small.json",
        "bfcl": "BFCL_v3_multi_turn_fixture.json",
        "lats": "synthetic",
    }
    assert Counter(p.kind for p in wl.programs) == {"sharegpt": 3, "bfcl": 3, "lats": 3}
    assert {p.meta["source"] for p in wl.programs} == {"sharegpt", "bfcl", "synthetic"}


def test_mix_weights_and_remainders() -> None:
    wl = load_workload("mixed", 10, seed=0, mix={"sharegpt": 1, "bfcl": 1, "lats": 0})
    assert Counter(p.kind for p in wl.programs) == {"sharegpt": 5, "bfcl": 5}
    wl = load_workload("mixed", 10, seed=0)
    assert sorted(Counter(p.kind for p in wl.programs).values()) == [3, 3, 4]


def test_adding_a_kind_keeps_the_others() -> None:
    a = load_workload("mixed", 6, seed=3, mix={"sharegpt": 1, "bfcl": 1, "lats": 0})
    b = load_workload("mixed", 9, seed=3)
    key = lambda wl: sorted((p.program_id, p.calls) for p in wl.programs if p.kind == "bfcl")  # noqa: E731
    assert key(a) == key(b)


def test_single_workload_rejects_foreign_data() -> None:
    with pytest.raises(ValueError, match="mixed"):
        load_workload("sharegpt", 3, seed=0, data=[MULTI])


def test_detect_formats(tmp_path: Path, tokenizer_file: Path) -> None:
    assert detect_format(SHAREGPT) == "sharegpt"
    assert detect_format(MULTI) == "bfcl"
    assert detect_format(SIMPLE) == "bfcl"
    assert detect_format(tokenizer_file) == "tokenizer"
    jsonl = tmp_path / "sharegpt.jsonl"
    jsonl.write_text("\n".join(json.dumps(c) for c in json.loads(SHAREGPT.read_text())))
    assert detect_format(jsonl) == "sharegpt"
    odd = tmp_path / "odd.json"
    odd.write_text('[{"text": "hello"}]')
    with pytest.raises(ValueError, match="unrecognised"):
        detect_format(odd)
    # the name says BFCL, the content says ShareGPT: content wins
    misnamed = tmp_path / "BFCL_v3_x.json"
    misnamed.write_text(SHAREGPT.read_text())
    assert detect_format(misnamed) == "sharegpt"


def test_tokenizer_when_given_else_estimate(tokenizer_file: Path) -> None:
    text = "How do I reverse a list in Python?"
    tok = make_counter(tokenizer_file)
    assert isinstance(tok, HFTokenizer) and tok.count(text) == 9  # 8 words + "?"
    assert tok.count_many([text, "list"]) == [9, 1]
    est = make_counter(None)
    assert isinstance(est, CharEstimate) and est.count(text) == 9  # ceil(34 / 4)
    assert est.count("x" * 41) == 11
    # through the loader: a tokenizer.json among --data is used, and named in provenance
    with_tok = load_workload("sharegpt", 4, seed=0, data=[SHAREGPT, tokenizer_file])
    without = load_workload("sharegpt", 4, seed=0, data=[SHAREGPT])
    assert with_tok.tokens.startswith("tokenizer") and without.tokens.startswith("estimate")
    assert [p.calls for p in with_tok.programs] != [p.calls for p in without.programs]


def test_poisson_arrivals_scale_with_rate() -> None:
    progs = load_workload("bfcl", 2000, seed=0).programs
    a1 = np.array([p.arrival_s for p in with_arrivals(progs, 1.0, seed=0)])
    a4 = np.array([p.arrival_s for p in with_arrivals(progs, 4.0, seed=0)])
    assert a1[0] == 0.0 and np.all(np.diff(a1) >= 0)
    np.testing.assert_allclose(a4, a1 / 4)  # common random numbers across rates
    gaps = np.diff(a1)
    assert abs(gaps.mean() - 1.0) < 0.07 and abs(gaps.std() / gaps.mean() - 1.0) < 0.1
    other = np.array([p.arrival_s for p in with_arrivals(progs, 1.0, seed=1)])
    assert not np.allclose(other, a1)
    assert [p.calls for p in with_arrivals(progs, 2.0, 0)] == [p.calls for p in progs]


def test_bursty_arrivals_have_high_cv() -> None:
    progs = load_workload("sharegpt", 4000, seed=0).programs
    arr = np.array([p.arrival_s for p in with_arrivals(progs, 2.0, 0, "bursty", cv=3.0)])
    gaps = np.diff(arr)
    assert abs(gaps.mean() - 0.5) < 0.1
    assert 2.4 < gaps.std() / gaps.mean() < 3.6
    with pytest.raises(ValueError):
        with_arrivals(progs, 1.0, 0, "weekly")


@pytest.mark.parametrize("kind", ["sharegpt", "bfcl", "lats", "mixed"])
def test_every_reused_prefix_is_realizable_from_a_parent(kind: str) -> None:
    """A call's reused prefix is never longer than the context (prompt + output) one of its
    parents held: the simulator grants a cache hit for `prefix_tokens`, and the live driver
    builds the prompt from the longest parent's tokens, so both must see the same reuse (LATS
    once gave calls more prefix than any parent had: free prefill only the simulator saw)."""
    wl = load_workload(kind, 60, seed=3)
    checked = 0
    for p in wl.programs:
        for c in p.calls:
            held = max((p.calls[q].context_tokens for q in c.parents), default=0)
            assert 0 <= c.prefix_tokens <= min(held, c.prompt_tokens), (p.program_id, c)
            checked += c.prefix_tokens > 0
    assert checked > 0  # the workload does reuse context
