"""Building the vLLM engine: config to `AsyncEngineArgs`, dummy models, and the engine itself.

* **Dummy models.** `model="dummy:<preset>"` writes a dummy-weight Llama config
  (`backends.tinymodel`) and loads it with `load_format="dummy"`: real engine, real timing, no
  download, no tokenizer (token-id prompts only) unless `dummy_tokenizer=true`, which adds a small
  offline word-level tokenizer with a chat template (so text and chat prompts run for real).
  A model directory of your own without tokenizer files (`lacks_tokenizer`) is served the same
  way: token-id prompts only.
* **IPC sockets.** vLLM puts its sockets in TMPDIR and leaves some behind, so each engine gets a
  directory of its own (`ipc_dir`), which the backend removes when it stops.
* **Lazy import.** vLLM takes seconds to import; `load_vllm` is called only when an engine starts,
  so `--backend sim` never imports it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autellix.backends.base import BackendError
from autellix.backends.vllm.config import DUMMY_PREFIX, VllmBackendConfig

__all__ = [
    "VllmNames",
    "construct_engine",
    "engine_args",
    "has_cuda",
    "ipc_dir",
    "lacks_tokenizer",
    "load_vllm",
    "renice_children",
]


@dataclass(frozen=True)
class VllmNames:
    """The vLLM names the backend uses once its engine runs (imported by `load_vllm`)."""

    sampling_params: Any  # vllm.SamplingParams
    structured_outputs: Any  # vllm.sampling_params.StructuredOutputsParams
    delta: Any  # RequestOutputKind.DELTA
    validation_error: type[Exception]
    client_error: type[Exception]
    graceful_http_error: type[Exception]
    engine_dead_error: type[Exception]
    engine_generate_error: type[Exception]


def load_vllm() -> VllmNames:
    """Import vLLM (seconds) and return the names the backend uses."""
    from vllm import SamplingParams
    from vllm.exceptions import GracefulHTTPError, VLLMClientError, VLLMValidationError
    from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams
    from vllm.v1.engine.exceptions import EngineDeadError, EngineGenerateError

    return VllmNames(
        sampling_params=SamplingParams,
        structured_outputs=StructuredOutputsParams,
        delta=RequestOutputKind.DELTA,
        validation_error=VLLMValidationError,
        client_error=VLLMClientError,
        graceful_http_error=GracefulHTTPError,
        engine_dead_error=EngineDeadError,
        engine_generate_error=EngineGenerateError,
    )


def engine_args(cfg: VllmBackendConfig) -> dict[str, Any]:
    """The `AsyncEngineArgs` keywords ``cfg`` maps to (a dummy preset written to disk first)."""
    model, load_format, skip_tok, dtype = (
        cfg.model,
        cfg.load_format,
        cfg.skip_tokenizer_init,
        cfg.dtype,
    )
    if model.startswith(DUMMY_PREFIX):
        from autellix.backends.tinymodel import PRESETS, make_preset

        preset = model.removeprefix(DUMMY_PREFIX)
        if preset not in PRESETS:
            raise BackendError(
                "model_load_failed",
                f"unknown dummy preset {preset!r}; choose {sorted(PRESETS)}",
            )
        root = Path(cfg.model_dir or Path.home() / ".cache" / "autellix" / "models")
        if cfg.dummy_tokenizer:
            from autellix.backends.tinymodel import make_preset_with_tokenizer

            model = str(make_preset_with_tokenizer(root / f"{preset}-tok", preset))
            load_format, skip_tok = "dummy", False
        else:
            model = str(make_preset(root / preset, preset))
            load_format, skip_tok = "dummy", True
        if dtype == "auto" and not has_cuda():
            dtype = PRESETS[preset].torch_dtype
    elif not skip_tok and lacks_tokenizer(model):
        skip_tok = True  # a config-only directory (dummy weights): token-id prompts, no text
    enforce_eager = cfg.enforce_eager if cfg.enforce_eager is not None else not has_cuda()
    args: dict[str, Any] = {
        "model": model,
        "dtype": dtype,
        "max_num_seqs": cfg.max_num_seqs,
        "enable_prefix_caching": cfg.enable_prefix_caching,
        "load_format": load_format,
        "skip_tokenizer_init": skip_tok,
        "enforce_eager": enforce_eager,
        "scheduling_policy": cfg.scheduling_policy,
        "seed": cfg.seed,
        "disable_log_stats": not cfg.log_stats,
    }
    if cfg.max_model_len:
        args["max_model_len"] = cfg.max_model_len
    if cfg.gpu_memory_utilization is not None:
        args["gpu_memory_utilization"] = cfg.gpu_memory_utilization
    if cfg.kv_cache_gib is not None:
        args["kv_cache_memory_bytes"] = int(cfg.kv_cache_gib * (1 << 30))
    if cfg.max_num_batched_tokens:
        args["max_num_batched_tokens"] = cfg.max_num_batched_tokens
    if cfg.block_size:
        args["block_size"] = cfg.block_size
    args.update(cfg.engine_args)
    return args


TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
    "spiece.model",
    "tekken.json",
)


def lacks_tokenizer(model: str) -> bool:
    """Whether ``model`` is a local directory with no tokenizer files (e.g. a `config.json` for
    dummy weights). vLLM would stop on it with "Couldn't instantiate the backend tokenizer";
    served without one, it runs on token-id prompts as the dummy presets do. A Hugging Face id
    (not a directory here) is left to vLLM."""
    path = Path(model).expanduser()
    return path.is_dir() and not any((path / name).exists() for name in TOKENIZER_FILES)


def construct_engine(args: dict[str, Any], ipc_dir: str | None, stat_logger: Any) -> Any:
    """`AsyncLLM` for ``args`` (blocking: vLLM spawns its engine-core and worker processes),
    with its IPC sockets in ``ipc_dir`` and ``stat_logger`` fed by every engine step."""
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    saved_env, saved_tempdir = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"] = ipc_dir or tempfile.gettempdir()
    tempfile.tempdir = ipc_dir
    try:
        return AsyncLLM.from_engine_args(AsyncEngineArgs(**args), stat_loggers=[stat_logger])
    finally:
        if saved_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved_env
        tempfile.tempdir = saved_tempdir


def ipc_dir() -> str:
    """A fresh directory for vLLM's IPC sockets. ZMQ socket paths are limited to 107 bytes and
    vLLM appends a 36-character uuid, so a deep TMPDIR (pytest's tmp_path, say) falls back to
    /tmp rather than failing at start-up."""
    path = tempfile.mkdtemp(prefix="autellix-vllm-")
    if len(path) > 60 and Path("/tmp").is_dir():
        shutil.rmtree(path, ignore_errors=True)
        path = tempfile.mkdtemp(prefix="autellix-vllm-", dir="/tmp")
    return path


def renice_children(nice: int) -> None:
    """Give vLLM's engine-core and worker processes (all threads) niceness `nice`.

    For benchmarks on a shared CPU box: vLLM pins its worker to one core, where every other
    runnable process (the control plane, other users) steals time from the model. A negative
    value (root only) makes that core behave like a dedicated device, for baselines and Autellix
    alike."""
    import psutil

    for proc in psutil.Process().children(recursive=True):
        try:
            for thread in proc.threads():
                os.setpriority(os.PRIO_PROCESS, thread.id, nice)
        except (psutil.Error, OSError):
            continue


def has_cuda() -> bool:
    """Whether torch sees a GPU (CPU presets and eager mode depend on it)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - vLLM always brings torch
        return False
    return bool(torch.cuda.is_available())
