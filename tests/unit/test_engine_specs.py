"""What `autellix up` starts: SIMULATED engines timed by a shipped profile unless told
otherwise, vLLM engines with a KV cache size on CPUs and the offline tokenizer for presets."""

from __future__ import annotations

import pytest
import typer

from autellix.backends.sim import SimConfig
from autellix.cli.up import _engines
from autellix.local.engine_specs import DEFAULT_SIM_PROFILE, sim_engine, vllm_engine
from autellix.sim.profile import load_profile


def _flag(args: tuple[str, ...] | list[str], name: str) -> str:
    return list(args)[list(args).index(name) + 1]


def test_sim_engines_default_to_a_realistic_profile() -> None:
    (first, second) = _engines("sim", None, None, 8, None, None)
    assert (
        first == second
        and first.backend == "sim"
        and first.label == f"profile {DEFAULT_SIM_PROFILE}"
    )
    profile = load_profile(DEFAULT_SIM_PROFILE)
    timing = SimConfig(
        token_latency_s=float(_flag(first.extra_args, "--token-latency")),
        step_per_seq_s=float(_flag(first.extra_args, "--step-per-seq")),
        prefill_s_per_token=float(_flag(first.extra_args, "--prefill-per-token")),
    ).profile()
    # a batch of 8 decoding, then a 1,000-token prompt: the times the profile itself gives
    assert timing.step_seconds(8, 0) == pytest.approx(profile.step_seconds(8, 0))
    assert timing.step_seconds(0, 0, 1000) == pytest.approx(profile.step_seconds(0, 0, 1000))
    assert timing.step_seconds(1, 0) > 0.005  # milliseconds a token, not zero-time
    assert sim_engine(4, "none").extra_args == () and sim_engine(4, "none").label == "zero-time"


def test_vllm_engines_need_a_model_and_size_their_cache_on_cpu() -> None:
    with pytest.raises(typer.BadParameter, match="needs --model"):
        _engines("vllm", None, None, 8, None, None)
    with pytest.raises(typer.BadParameter, match="for --backend vllm"):
        _engines("sim", "dummy:tiny", None, 8, None, None)
    with pytest.raises(typer.BadParameter, match="unknown backend"):
        _engines("tpu", "m", None, 8, None, None)
    cpu = vllm_engine("dummy:tiny", 4, cuda=False)
    assert _flag(cpu.extra_args, "--model") == "dummy:tiny"
    assert "kv_cache_gib=1" in cpu.extra_args and "dummy_tokenizer=true" in cpu.extra_args
    gpu = vllm_engine("/models/llama", 4, cuda=True)
    assert not any(a.startswith(("kv_cache_gib", "dummy_tokenizer")) for a in gpu.extra_args)
    assert "kv_cache_gib=0.5" in vllm_engine("/m", 4, kv_cache_gib=0.5, cuda=True).extra_args
