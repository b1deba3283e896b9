"""What `autellix up` passes each engine it starts: simulated with a timing profile, or vLLM.

Why a module of its own: the choices behind an engine's command line (which timing a simulated
engine gets, what a vLLM engine on a CPU needs to start at all) are decided once here, so
`autellix up` and the stack's banner agree on what runs.

* **Simulated** engines time every step with a shipped `EngineProfile` (default
  ``DEFAULT_SIM_PROFILE``: Llama-3.1-8B on one A100, about 10 ms per decode step), so their calls
  take the time a real engine would instead of arriving all at once; ``"none"`` keeps the
  zero-time engine (tests, throughput of the control plane alone).
* **vLLM** engines get the model as given (a path, a Hugging Face id, or ``dummy:<preset>``:
  dummy weights with the offline tokenizer and its tool-aware chat template, so chat works
  without a download) and, on a machine without CUDA, an explicit KV cache size: vLLM's CPU build
  would otherwise reserve a fraction of all host memory.
"""

from __future__ import annotations

from collections.abc import Sequence

from autellix.local.stack import EngineConfig
from autellix.sim.profile import EngineProfile, load_profile

DEFAULT_SIM_PROFILE = "gpu-a100-llama8b"
NO_PROFILE = "none"
CPU_KV_CACHE_GIB = 1.0
DUMMY_PREFIX = "dummy:"  # as `autellix.backends.vllm.config` (not imported: it is vLLM's side)


def sim_profile_args(profile: EngineProfile) -> list[str]:
    """The engine flags that make the simulated backend time its steps as ``profile`` does
    (fixed cost per step, cost per running call, cost per uncached prompt token)."""
    return [
        "--token-latency", repr(profile.base_s),
        "--step-per-seq", repr(profile.decode_per_seq_s),
        "--prefill-per-token", repr(profile.prefill_per_token_s),
    ]  # fmt: skip


def sim_engine(
    max_batch: int, profile: str = DEFAULT_SIM_PROFILE, extra: Sequence[str] = ()
) -> EngineConfig:
    """A simulated engine timed by the shipped profile ``profile`` (``"none"``: zero-time)."""
    timing = [] if profile == NO_PROFILE else sim_profile_args(load_profile(profile))
    label = "zero-time" if profile == NO_PROFILE else f"profile {profile}"
    return EngineConfig("sim", max_batch, (*timing, *extra), label=label)


def vllm_engine(
    model: str,
    max_batch: int,
    *,
    kv_cache_gib: float | None = None,
    cuda: bool = False,
    extra: Sequence[str] = (),
) -> EngineConfig:
    """A vLLM engine serving ``model``. Without CUDA the KV cache is sized explicitly
    (``kv_cache_gib``, default ``CPU_KV_CACHE_GIB``); on a GPU vLLM sizes it unless asked."""
    args = ["--model", model]
    if kv_cache_gib is None and not cuda:
        kv_cache_gib = CPU_KV_CACHE_GIB
    if kv_cache_gib is not None:
        args += ["--opt", f"kv_cache_gib={kv_cache_gib:g}"]
    if model.startswith(DUMMY_PREFIX):
        args += ["--opt", "dummy_tokenizer=true"]
    return EngineConfig("vllm", max_batch, (*args, *extra), label=f"model {model}")
