"""A model directory holding only a `config.json` (dummy weights, no tokenizer files) is served
with token-id prompts instead of stopping vLLM with "Couldn't instantiate the backend tokenizer".

The directory is the tiny preset's config (`make_preset`), loaded through the
ordinary path branch (not the `dummy:` preset branch) with `load_format=dummy`, on the real vLLM
engine; a directory that has tokenizer files keeps its tokenizer.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from autellix.backends.base import BackendError, GenerationRequest
from autellix.backends.tinymodel import make_preset, make_preset_with_tokenizer
from autellix.backends.vllm import VllmBackend, VllmBackendConfig
from autellix.backends.vllm.engine import engine_args, lacks_tokenizer

pytestmark = pytest.mark.vllm


def test_config_only_dir_skips_the_tokenizer(tmp_path: Path) -> None:
    bare = make_preset(tmp_path / "bare", "tiny")
    assert not any("token" in p.name or "vocab" in p.name for p in bare.iterdir())
    with_tok = make_preset_with_tokenizer(tmp_path / "tok", "tiny")
    assert lacks_tokenizer(str(bare)) and not lacks_tokenizer(str(with_tok))
    assert not lacks_tokenizer("meta-llama/Llama-3.1-8B-Instruct")  # an id: vLLM's business
    cfg = VllmBackendConfig(model=str(bare), load_format="dummy")
    assert engine_args(cfg)["skip_tokenizer_init"] is True
    cfg = VllmBackendConfig(model=str(with_tok), load_format="dummy")
    assert engine_args(cfg)["skip_tokenizer_init"] is False


async def test_config_only_dir_generates_from_token_ids(tmp_path: Path) -> None:
    pytest.importorskip("vllm")
    bare = make_preset(tmp_path / "bare", "tiny")
    b = VllmBackend(
        VllmBackendConfig(
            model=str(bare),
            load_format="dummy",
            max_model_len=256,
            max_num_seqs=2,
            kv_cache_gib=0.0625,
        )
    )
    await b.start()
    try:
        tokens: list[int] = []
        req = GenerationRequest("ids", list(range(10, 40)), max_tokens=6, ignore_eos=True)
        async with contextlib.aclosing(b.generate(req)) as gen:
            async for chunk in gen:
                tokens.extend(chunk.token_ids)
        assert len(tokens) == 6 and all(0 <= t < (b.vocab_size or 0) for t in tokens)
        with pytest.raises(BackendError) as err:
            b.tokenize("text needs a tokenizer")
        assert err.value.code == "no_tokenizer"
    finally:
        await b.stop()
