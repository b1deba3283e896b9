"""What a failed call raises: the protocol's `CallError`, as an exception a caller can catch.

`CallFailed` carries the error itself (`.code`, `.retryable`, `.call_id`), so a caller decides
on the code, not on a message; `CallTimeout` is also a `TimeoutError`, so code written for
`asyncio.wait_for` timeouts catches it too.
"""

from __future__ import annotations

from autellix.wire.protocol import CallError, ErrorCode

__all__ = ["CallFailed", "CallTimeout", "unavailable"]


class CallFailed(Exception):
    """A call (or program request) answered with a `CallError`."""

    def __init__(self, error: CallError) -> None:
        super().__init__(f"{error.code.value}: {error.message}")
        self.error = error

    @property
    def code(self) -> ErrorCode:
        return self.error.code

    @property
    def call_id(self) -> str | None:
        return self.error.call_id

    @property
    def retryable(self) -> bool:
        return self.error.retryable


class CallTimeout(CallFailed, TimeoutError):
    """No final answer within the call's timeout (the call may still finish server-side)."""


def unavailable(subject: str) -> CallError:
    """The error for a request nobody answers: no frontend runs (retryable: one may start)."""
    return CallError(
        code=ErrorCode.internal,
        message=f"no Autellix frontend is listening on {subject} (is the stack up?)",
        retryable=True,
    )
