"""`VllmBackendConfig`: the engine settings, from `--opt key=value` options and the environment.

Options arrive as strings (the command line, `AUTELLIX_VLLM_<FIELD>`), so each is converted to its
field's type here, and an unknown option is an error rather than silently ignored.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DUMMY_PREFIX", "ENV_PREFIX", "VllmBackendConfig"]

ENV_PREFIX = "AUTELLIX_VLLM_"
DUMMY_PREFIX = "dummy:"


@dataclass
class VllmBackendConfig:
    """Engine settings; every field can also come from env `AUTELLIX_VLLM_<FIELD>`.

    `kv_cache_gib` sets the KV cache size explicitly (what CPUs need: vLLM's CPU backend would
    otherwise reserve `gpu_memory_utilization` of *all* host memory). On GPUs leave it unset and
    use `gpu_memory_utilization`.
    """

    model: str = "dummy:tiny"
    dtype: str = "auto"  # CPU presets resolve "auto" to the preset's dtype (float32)
    max_model_len: int | None = None
    max_num_seqs: int = 8
    queue_ahead: int = 0  # extra calls held in vLLM's waiting queue (see the package docstring)
    nice: int | None = None  # benchmarks: renice vLLM's engine processes (a dedicated device)
    enable_prefix_caching: bool = True
    gpu_memory_utilization: float | None = None
    kv_cache_gib: float | None = None
    load_format: str = "auto"
    skip_tokenizer_init: bool = False
    enforce_eager: bool | None = None  # None: eager on CPU (no compile), graphs on GPU
    scheduling_policy: str = "priority"
    max_num_batched_tokens: int | None = None
    block_size: int | None = None
    seed: int = 0
    log_stats: bool = False  # vLLM's own periodic stat lines
    model_dir: str | None = None  # where dummy presets are written (default: a cache dir)
    dummy_tokenizer: bool = False  # dummy presets: add the offline test tokenizer + chat template
    engine_args: dict[str, Any] = field(default_factory=dict)  # passed through to AsyncEngineArgs

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> VllmBackendConfig:
        """Build from env `AUTELLIX_VLLM_*`, then keyword options (which win). Strings, as
        `--opt key=value` delivers them, are converted to the field's type."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {
            name: os.environ[ENV_PREFIX + name.upper()]
            for name in known
            if ENV_PREFIX + name.upper() in os.environ
        }
        for key, value in options.items():
            if key not in known:
                raise ValueError(f"unknown vllm backend option {key!r}; known: {sorted(known)}")
            values[key] = value
        cfg = cls()
        for key, value in values.items():
            setattr(cfg, key, _coerce(key, value) if isinstance(value, str) else value)
        return cfg


_BOOL_FIELDS = {
    "enable_prefix_caching",
    "skip_tokenizer_init",
    "enforce_eager",
    "log_stats",
    "dummy_tokenizer",
}
_INT_FIELDS = {
    "max_model_len",
    "max_num_seqs",
    "max_num_batched_tokens",
    "block_size",
    "seed",
    "queue_ahead",
    "nice",
}
_FLOAT_FIELDS = {"gpu_memory_utilization", "kv_cache_gib"}
_OPTIONAL_FIELDS = {
    "max_model_len",
    "gpu_memory_utilization",
    "kv_cache_gib",
    "enforce_eager",
    "max_num_batched_tokens",
    "block_size",
    "model_dir",
    "nice",
}


def _coerce(key: str, value: str) -> Any:
    """One option string as the field's type."""
    if key in _OPTIONAL_FIELDS and value.lower() in ("", "none", "null"):
        return None
    if key in _BOOL_FIELDS:
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"option {key} expects a boolean, got {value!r}")
    if key in _INT_FIELDS:
        return int(value)
    if key in _FLOAT_FIELDS:
        return float(value)
    if key == "engine_args":
        return json.loads(value)
    return value
