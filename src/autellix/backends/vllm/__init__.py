"""`vllm`: the real vLLM V1 engine (`AsyncLLM`), used as an unmodified library.

Why it is shaped like this:

* **We own scheduling.** vLLM V1 preempts only under KV-cache pressure, never because a better
  request waits at a full batch (vllm-project/vllm#40004), so the engine service admits at most
  `max_batch` requests and preempts by cancelling a stream. This backend only generates: it passes
  the service's rank (MLFQ level, then the order inside it) as vLLM's `priority` (with
  `scheduling_policy="priority"`) so that, when the KV cache does run out, vLLM evicts the least
  important request.
* **Refilling slots without a gap** (`queue_ahead`, off by default). With exactly `max_num_seqs`
  requests in vLLM, a slot freed by a finished call stays empty until the service has recorded
  the finish and started the next call (two Postgres round trips and a step). `queue_ahead=k`
  makes this backend report `max_batch = max_num_seqs + k`, so the service keeps up to k more
  calls resident in vLLM's own waiting queue, ordered by `priority` (the full rank key, not the
  level alone, so the order inside a level survives); vLLM refills a freed slot from them in the
  same step (the paper's "few extra calls resident to refill slots"). They are preemptible like
  running calls, at no cost (nothing computed yet).
* **Preemption = abort + continuation.** Cancelling the iterator (task.cancel or `aclose`) makes
  vLLM's own `generate()` abort the request, which frees its batch slot within one engine step
  (measured: ~20-45 ms on this CPU). The service resumes with prompt + tokens so far; prefix caching
  turns that into a cache hit (a 1,044-token resume costs one short step, not a full prefill).
* **Deltas.** Requests use `RequestOutputKind.DELTA`, so each chunk carries only new token ids;
  `num_cached_tokens` (prefix-cache hits) is reported once, on the first chunk.
* **Typed errors.** Anything the caller did wrong becomes `BackendError(validation_error |
  prompt_too_long | no_tokenizer)`; a dead engine becomes `BackendError(engine_failed)` and the
  service re-dispatches.
* **Stats without polling.** A custom vLLM stat logger keeps the scheduler's latest running/waiting
  counts, KV-cache usage and prefix-cache hits; it is fed by every engine step vLLM already does.
* **Dummy models.** `model="dummy:<preset>"` loads a dummy-weight Llama config with
  `load_format="dummy"`: real engine, real timing, no download (`engine`).
* **A dead engine is reported, not hidden.** `dead` turns true once vLLM's engine core is gone;
  the engine service then hands its calls back to the schedulers and exits non-zero.
* **No orphans.** vLLM's engine-core and worker processes outlive a SIGKILLed parent (measured:
  still running 20 s later, holding their memory). A tiny watchdog process (no imports until it
  acts) kills exactly those processes when this one dies.

vLLM is imported lazily (in `start`), so importing this package is cheap. The modules, one job
each: `config` (options), `engine` (engine arguments, dummy models, construction), `request_params`
(request checks, sampling parameters), `errors` (typed errors), `stats` (the stat logger),
`watchdog` (the orphan watchdog) and `backend` (`VllmBackend`, which uses them all).
"""

from __future__ import annotations

from typing import Any

from autellix.backends.vllm.backend import VllmBackend
from autellix.backends.vllm.config import VllmBackendConfig

__all__ = ["VllmBackend", "VllmBackendConfig", "create"]


def create(
    *,
    model: str | None = None,
    max_batch: int | None = None,
    max_model_len: int | None = None,
    **options: Any,
) -> VllmBackend:
    """Factory used by the engine service (`--backend vllm`); unknown options are an error."""
    merged: dict[str, Any] = dict(options)
    if model:
        merged["model"] = model
    if max_batch:
        merged["max_num_seqs"] = max_batch
    if max_model_len:
        merged["max_model_len"] = max_model_len
    return VllmBackend(VllmBackendConfig.from_options(merged))
