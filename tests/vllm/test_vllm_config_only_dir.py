"""A model directory holding only a `config.json` (dummy weights, no tokenizer files) is served
with token-id prompts instead of stopping vLLM with "Couldn't instantiate the backend tokenizer".

The directory is the tiny preset's config (`make_preset`), loaded through the
ordinary path branch (not the `dummy:` preset branch) with `load_format=dummy`, by the engine
service's command line on the real vLLM engine; a directory that has tokenizer files keeps its
tokenizer.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from svc_stack import Stack

from autellix.backends.tinymodel import make_preset, make_preset_with_tokenizer
from autellix.backends.vllm import VllmBackendConfig
from autellix.backends.vllm.engine import engine_args, lacks_tokenizer
from autellix.client import CallFailed, Client
from autellix.runtime.settings import Settings
from autellix.wire.protocol import ErrorCode, SamplingParams

pytestmark = pytest.mark.vllm
VOCAB = 4096  # the tiny preset's


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


async def test_engine_cli_serves_a_config_only_dir(
    module_settings: Settings, tmp_path: Path
) -> None:
    """The engine service as an operator starts it (`python -m autellix.services.engine
    --backend vllm --model DIR --opt load_format=dummy`, what compose and the k8s manifests
    run) on a directory with only config.json, behind a frontend and a scheduler: a token-id
    call is answered by vLLM (in-vocabulary ids, exactly max_tokens), a text prompt gets the
    typed `no_tokenizer` error and the engine serves on."""
    pytest.importorskip("vllm")
    bare = make_preset(tmp_path / "bare", "tiny")
    (tmp_path / "tmp").mkdir()
    stack = Stack(module_settings, tmp_path / "logs")
    stack.start_frontend()
    stack.start("scheduler", "scheduler")
    stack.start(
        "vllm-bare",
        "engine",
        "--engine-id", "vllm-bare",
        "--backend", "vllm",
        "--model", str(bare),
        "--opt", "load_format=dummy",
        "--opt", "kv_cache_gib=0.0625",
        "--max-model-len", "256",
        "--max-batch", "2",
        stop_timeout=60.0,
        env={"TMPDIR": str(tmp_path / "tmp")},
    )  # fmt: skip
    try:
        await stack.wait_ready(wait_s=300.0)
        s = module_settings
        async with Client(s.nats_url, namespace=s.namespace, timeout=120) as client:
            async with client.program("bare") as p:
                got = await p.call(
                    prompt_token_ids=list(range(10, 40)),
                    sampling=SamplingParams(max_tokens=6, ignore_eos=True),
                )
                assert len(got.token_ids) == 6 and all(0 <= t < VOCAB for t in got.token_ids)
                assert got.engine.backend == "vllm" and got.engine.engine_id == "vllm-bare"
                assert got.text is None  # no tokenizer: no text to give
                with pytest.raises(CallFailed) as err:
                    await p.call("text needs a tokenizer", max_tokens=3)
                assert err.value.code == ErrorCode.no_tokenizer, err.value
                again = await p.call(prompt_token_ids=[11, 12, 13], max_tokens=2)
                assert len(again.token_ids) == 2
        assert "call segment crashed" not in stack.logs("vllm-bare")
    finally:
        await stack.stop()
