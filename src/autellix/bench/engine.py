"""The simulated engine a live benchmark runs, and the simulator profile that models it exactly.

The `sim` engine backend (src/autellix/backends/sim.py) takes one batch step in

    token_latency_s + step_per_seq_s * (sequences in the step) + prefill_s_per_token * (new,
    uncached prompt tokens of calls admitted in the step)

seconds. The simulator's `EngineProfile` has the same terms (`base_s`, `decode_per_seq_s`,
`prefill_per_token_s`) plus two the sim backend does not model (`decode_per_ctx_token_s`,
`prefill_attn_s`, set to 0 here). `SimEngineTiming.profile()` maps one onto the other, so the
simulator's prediction of a live run is a prediction for *that* engine, not for a calibrated
real one. Known differences left in the two models (reported by `bench live`, see
bench/live/README.md): the simulator does not count calls admitted in a step in that step's
per-sequence term, and it has no control plane (dispatch) delay.

Defaults: the calibrated `cpu-tiny` profile's constant, per-sequence and prefill terms (the real
vLLM engine on this machine) with a batch of 16, so the simulated engine steps at the speed of a
real small engine here, without its context-length terms.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from autellix.sim.profile import EngineProfile, load_profile

DEFAULT_PROFILE = "cpu-tiny"
DEFAULT_BATCH = 16
# The sim backend's default prefix cache and KV size (SimConfig): the simulator gets the same.
SIM_CACHE_TOKENS = 1_000_000
# Token deltas at most every 0.1 s per call: streaming granularity does not change when a call
# finishes (the final message carries all tokens), and fewer messages leave the two shared cores
# to the work being measured.
DEFAULT_DELTA_INTERVAL_S = 0.1


class EngineSpec(Protocol):
    """What a live benchmark needs to start an engine of some backend (duck-typed: the `sim`
    timing below; issue 6's `plain_vllm.VllmEngineSpec` for real vLLM engines)."""

    backend: str
    max_batch: int

    def engine_args(self) -> list[str]: ...

    def describe(self) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class SimEngineTiming:
    """Timing of one simulated engine (the `sim` backend's flags)."""

    backend: ClassVar[str] = "sim"

    step_s: float
    step_per_seq_s: float = 0.0
    prefill_per_token_s: float = 0.0
    max_batch: int = DEFAULT_BATCH
    delta_interval_s: float = DEFAULT_DELTA_INTERVAL_S
    source: str = "explicit flags"
    extra_args: tuple[str, ...] = ()  # more engine flags (e.g. --drain-timeout)

    @classmethod
    def from_profile(
        cls, name: str = DEFAULT_PROFILE, max_batch: int = DEFAULT_BATCH, **overrides: Any
    ) -> SimEngineTiming:
        """Sim-engine flags taking a simulator profile's step, per-sequence and prefill terms."""
        prof = load_profile(name)
        base = cls(
            step_s=prof.base_s,
            step_per_seq_s=prof.decode_per_seq_s,
            prefill_per_token_s=prof.prefill_per_token_s,
            max_batch=max_batch,
            source=f"profile {prof.name} (base, per-seq and prefill terms; context terms dropped)",
        )
        given = {k: v for k, v in overrides.items() if v is not None}
        return dataclasses.replace(base, **given) if given else base

    def engine_args(self) -> list[str]:
        """Extra command-line flags for `python -m autellix.services.engine --backend sim`."""
        return [
            "--token-latency", repr(self.step_s),
            "--step-per-seq", repr(self.step_per_seq_s),
            "--prefill-per-token", repr(self.prefill_per_token_s),
            "--delta-interval", repr(self.delta_interval_s),
            *self.extra_args,
        ]  # fmt: skip

    def step_seconds(self, batch: int, prefill_tokens: int = 0) -> float:
        """One step of the sim backend with `batch` sequences (its own formula)."""
        return self.step_s + self.step_per_seq_s * batch + self.prefill_per_token_s * prefill_tokens

    def profile(self, *, scale: float = 1.0, prefill_scale: float = 1.0) -> EngineProfile:
        """The simulator profile of this engine; `scale` stretches every time term (used to model
        an engine measured to run slower than configured, e.g. on a contended CPU), and
        `prefill_scale` the prefill term on top (a diagnostic: see `live.predict`)."""
        tag = "" if scale == 1.0 else f"-x{scale:.3f}"
        tag += "" if prefill_scale == 1.0 else f"-prefill-x{prefill_scale:.3f}"
        return EngineProfile(
            name=f"live-sim-engine{tag}",
            max_num_seqs=self.max_batch,
            kv_capacity_tokens=SIM_CACHE_TOKENS,
            base_s=self.step_s * scale,
            decode_per_seq_s=self.step_per_seq_s * scale,
            prefill_per_token_s=self.prefill_per_token_s * scale * prefill_scale,
            block_size=16,
            calibration="synthetic",
            source=f"derived from the live sim engine's flags ({self.source})",
        )

    def describe(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
