"""Engine cost profiles: capacity limits and the per-iteration latency model of one engine.

One engine iteration (a continuous-batching step) takes
    base_s
  + decode_per_seq_s       * (sequences decoding in the step)
  + decode_per_ctx_token_s * (their total context tokens: attention reads the whole KV)
  + prefill_per_token_s    * (prompt tokens computed in the step, i.e. not prefix-cache hits)
  + prefill_attn_s         * sum over prefilled calls of (new tokens * call context tokens)
seconds. Every running sequence gains one token per step; a call's prefill step also yields its
first token. Profiles are JSON files in `autellix/sim/profiles/` (or any path) so measured numbers
live beside their provenance; `source` and `calibration` say where the numbers come from.

This is the one timing model of a simulated engine: the simulator's iterations and the live `sim`
engine backend's steps (`autellix.backends.sim`, which builds an `EngineProfile` from its flags)
both take `step_seconds`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class EngineProfile:
    name: str
    max_num_seqs: int
    kv_capacity_tokens: int
    base_s: float
    decode_per_seq_s: float = 0.0
    decode_per_ctx_token_s: float = 0.0
    prefill_per_token_s: float = 0.0
    prefill_attn_s: float = 0.0
    swap_s_per_token: float = 0.0
    block_size: int = 16
    max_num_batched_tokens: int | None = None
    calibration: str = "synthetic"  # "measured" | "published" | "pending" | "synthetic"
    source: str = ""
    notes: str = ""

    def step_seconds(
        self,
        n_decode: int,
        ctx_decode: float,
        prefill_tokens: float = 0.0,
        prefill_attn: float = 0.0,
    ) -> float:
        """Duration of one iteration (see module docstring)."""
        return (
            self.base_s
            + self.decode_per_seq_s * n_decode
            + self.decode_per_ctx_token_s * ctx_decode
            + self.prefill_per_token_s * prefill_tokens
            + self.prefill_attn_s * prefill_attn
        )

    def replace(self, **changes: Any) -> EngineProfile:
        return dataclasses.replace(self, **changes)

    @classmethod
    def unit(cls, max_num_seqs: int = 2) -> EngineProfile:
        """Every step takes 1 time unit, prefill is free, KV unbounded: the paper's Fig. 2 model."""
        return cls(
            name="unit",
            max_num_seqs=max_num_seqs,
            kv_capacity_tokens=10**12,
            base_s=1.0,
            calibration="synthetic",
            notes="unit-time model for worked examples: one decode step = one time unit",
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EngineProfile:
        """Build from a profile JSON object; keys starting with '_' and unknown keys documenting
        provenance (e.g. 'measurements') are kept out of the model."""
        names = {f.name for f in dataclasses.fields(cls)}
        lat = data.get("latency", {})
        merged = {**{k: v for k, v in data.items() if k in names}, **lat}
        return cls(**{k: v for k, v in merged.items() if k in names})


def fit_latency(
    decode: Sequence[tuple[float, float, float]],
    prefill: Sequence[tuple[float, float, float]],
) -> dict[str, float]:
    """Least-squares latency coefficients from measured engine iterations.

    decode: (sequences in the batch, their total context tokens, step seconds) of pure decode steps.
    prefill: (prompt tokens computed, sum over prefilled calls of new_tokens * context_tokens,
        step seconds) of steps that only prefill (no decoding sequences).
    Returns the `latency` block of a profile JSON (negative fits are clipped to 0).
    """
    import numpy as np  # here, not at the top: the live `sim` backend imports this module

    d = np.asarray(decode, dtype=float)
    a = np.column_stack([np.ones(len(d)), d[:, 0], d[:, 1]])
    base, per_seq, per_ctx = np.linalg.lstsq(a, d[:, 2], rcond=None)[0]
    p = np.asarray(prefill, dtype=float)
    y = p[:, 2] - max(base, 0.0)
    pre, attn = np.linalg.lstsq(p[:, :2], y, rcond=None)[0]
    return {
        "base_s": max(float(base), 0.0),
        "decode_per_seq_s": max(float(per_seq), 0.0),
        "decode_per_ctx_token_s": max(float(per_ctx), 0.0),
        "prefill_per_token_s": max(float(pre), 0.0),
        "prefill_attn_s": max(float(attn), 0.0),
    }


_PKG = "autellix.sim"


def list_profiles() -> list[str]:
    """Names of the profiles shipped with the package."""
    folder = resources.files(_PKG).joinpath("profiles")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))


def load_profile(name_or_path: str | Path | EngineProfile) -> EngineProfile:
    """A shipped profile by name ("cpu-tiny", "gpu-a100-llama8b", "unit") or a JSON file path."""
    if isinstance(name_or_path, EngineProfile):
        return name_or_path
    if str(name_or_path) == "unit":
        return EngineProfile.unit()
    path = Path(name_or_path)
    if path.suffix == ".json" or path.exists():
        text = path.read_text()
    else:
        res = resources.files(_PKG).joinpath("profiles", f"{name_or_path}.json")
        if not res.is_file():
            known = ", ".join([*list_profiles(), "unit"])
            raise ValueError(f"unknown engine profile {name_or_path!r}; known: {known}")
        text = res.read_text()
    return EngineProfile.from_dict(json.loads(text))
