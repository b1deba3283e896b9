"""Typed errors for what vLLM raised while serving a request.

Anything the caller did wrong becomes `validation_error` or `prompt_too_long`; running out of
memory on a request is `out_of_memory` (the engine keeps serving others); a dead engine or any
other fault is `engine_failed`, which makes the engine service re-dispatch the call.
"""

from __future__ import annotations

from autellix.backends.base import BackendError
from autellix.backends.vllm.engine import VllmNames

__all__ = ["generate_error", "stream_error"]


def stream_error(exc: Exception, v: VllmNames) -> BackendError | None:
    """The typed error for ``exc`` raised by vLLM's output stream (None: not vLLM's)."""
    if isinstance(exc, v.engine_dead_error):
        return BackendError("engine_failed", f"vLLM engine died: {exc}")
    if isinstance(exc, v.client_error):  # validation (out-of-vocabulary ids, lengths, ...)
        text = str(exc)
        code = "prompt_too_long" if "maximum model length" in text else "validation_error"
        return BackendError(code, f"vLLM rejected the request: {text}")
    if isinstance(exc, v.graceful_http_error):  # admission control (queue full)
        return BackendError("engine_failed", f"vLLM refused the request: {exc}")
    if isinstance(exc, v.engine_generate_error):
        return generate_error(exc.__cause__)
    return None


def generate_error(cause: BaseException | None) -> BackendError:
    """A typed error for a request vLLM failed: out of memory is told apart from other faults
    (code `out_of_memory`; a protocol without that code shows it as engine_failed)."""
    text = f"{type(cause).__name__}: {cause}" if cause is not None else "unknown error"
    oom = type(cause).__name__ == "OutOfMemoryError" or "out of memory" in text.lower()
    if oom:
        return BackendError("out_of_memory", f"vLLM ran out of memory serving the request: {text}")
    if isinstance(cause, ValueError | TypeError):
        return BackendError("validation_error", f"vLLM rejected the request: {text}")
    return BackendError("engine_failed", f"vLLM failed the request: {text}")
