"""Logprobs from vLLM's per-position dicts to the wire (`backends/vllm/logprobs.py`), the
OpenAI shapes the frontend answers with (`http_logprobs.py`), and the bus-size rule that counts
their bytes (`delivery_size`)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autellix.backends.vllm.logprobs import LOGPROB_FLOOR, convert
from autellix.services.frontend.http_logprobs import chat_logprobs, completion_logprobs
from autellix.wire.base import BYTES_PER_LOGPROB
from autellix.wire.protocol import CallRequest, TokenDelta, delivery_size

vllm_logprobs = pytest.importorskip("vllm.logprobs")
Logprob = vllm_logprobs.Logprob


def _decode(token_id: int) -> str:
    return {1: "a", 2: "é", 3: " b"}.get(token_id, f"t{token_id}")


def test_candidates_by_rank_and_the_sampled_token_outside_them() -> None:
    # vLLM's dict: the sampled token (id 3, rank 4) plus the 2 most likely
    pos = {3: Logprob(-2.5, 4, None), 1: Logprob(-0.1, 1, None), 2: Logprob(-0.9, 2, None)}
    [e] = convert([3], [pos], 2, _decode)
    assert (e.token_id, e.token, e.logprob) == (3, " b", -2.5)
    assert e.bytes == list(b" b")
    assert [t.token_id for t in e.top_logprobs] == [1, 2]
    assert e.top_logprobs[1].bytes == list("é".encode())


def test_infinite_and_nan_become_the_floor_and_json_stays_valid() -> None:
    pos = {1: Logprob(-math.inf, 1, None), 2: Logprob(math.nan, 2, None)}
    [e] = convert([1], [pos], 1, _decode)
    assert e.logprob == LOGPROB_FLOOR and e.top_logprobs[0].logprob == LOGPROB_FLOOR
    delta = TokenDelta(call_id="c", offset=0, token_ids=[1], logprobs=[e])
    assert TokenDelta.model_validate_json(delta.model_dump_json()) == delta


def test_no_logprobs_from_vllm_is_none() -> None:
    assert convert([1, 2], None, 0, _decode) is None


@given(
    st.lists(
        st.tuples(st.text(max_size=6), st.floats(max_value=0.0, allow_nan=False)),
        min_size=1,
        max_size=20,
    ),
    st.integers(min_value=0, max_value=1000),
)
def test_completion_offsets_count_characters(tokens: list[tuple[str, float]], start: int) -> None:
    pos = [{i: Logprob(lp, 1, None)} for i, (_, lp) in enumerate(tokens)]
    entries = convert(list(range(len(tokens))), pos, 1, lambda i: tokens[i][0])
    assert entries is not None
    out = completion_logprobs(entries, start)
    assert out.tokens == [t for t, _ in tokens]
    assert out.text_offset == [
        start + sum(len(t) for t, _ in tokens[:i]) for i in range(len(tokens))
    ]
    chat = chat_logprobs(entries)
    assert chat.content is not None and [c.token for c in chat.content] == out.tokens
    assert all(len(c.top_logprobs) == 1 for c in chat.content)


def test_delivery_size_counts_logprob_entries() -> None:
    plain = CallRequest(program_id="p", prompt="x", sampling={"max_tokens": 100})
    lp0 = plain.model_copy(update={"sampling": plain.sampling.model_copy(update={"logprobs": 0})})
    lp5 = plain.model_copy(update={"sampling": plain.sampling.model_copy(update={"logprobs": 5})})
    a, b, c = delivery_size(plain), delivery_size(lp0), delivery_size(lp5)
    assert a < b < c
    assert c - b == 5 * BYTES_PER_LOGPROB * 100  # 1 + top_logprobs entries per token
