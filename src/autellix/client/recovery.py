"""How the client gets a call through a lost message: idempotent resubmits and resumes.

Two things can go missing between a client and the stack, and each has its own remedy:

* **Before `CallAccepted`** (no frontend up, or one that died holding the request, or a NATS
  server restarting): the request is sent again. Every request carries a `client_call_id` (made
  up here when the caller gave none), and the frontend accepts a call once per program and
  client call id, so a resend never runs the call twice; it only re-points the replies. Past
  the client's `accept_timeout` the caller gets an explicit error instead.
* **After it** (deltas or the final published while NATS was down, or before this client's
  subscription was back): a `CallResume` asks the frontend, which answers from Postgres: the
  stored tokens from the offset the client has and, once the call has ended, its answer. Asked
  when the connection reconnected, when deltas arrive past a gap, and after `silence_timeout`
  seconds without any message for the call.

`CallTimers` says when the next of these is due; the folding of a resume reply into the stream
is `fold_resume`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from autellix.client.streaming import CallStream
from autellix.wire.protocol import (
    CallError,
    CallFinal,
    CallRequest,
    CallResume,
    CallResumeReply,
    ErrorCode,
    TokenDelta,
)

__all__ = ["CallTimers", "fold_resume", "not_accepted", "resume_request", "with_client_call_id"]


def with_client_call_id(request: CallRequest) -> tuple[CallRequest, bool]:
    """``request`` with a client call id (a new random one when it had none), and whether it
    is new: the key that makes a resend safe."""
    if request.client_call_id is not None:
        return request, False
    key = f"auto-{secrets.token_hex(12)}"
    return request.model_copy(update={"client_call_id": key}), True


def resume_request(stream: CallStream) -> CallResume:
    """The `CallResume` for where ``stream`` stands: by call id once accepted."""
    req = stream.request
    if stream.call_id is not None:
        return CallResume(
            program_id=req.program_id, call_id=stream.call_id, offset=len(stream.tokens)
        )
    return CallResume(
        program_id=req.program_id, client_call_id=req.client_call_id, offset=len(stream.tokens)
    )


def fold_resume(
    stream: CallStream, reply: CallResumeReply
) -> tuple[list[TokenDelta], CallFinal | CallError | None]:
    """The new deltas a resume reply brings (stored tokens, then any held deltas they release)
    and the call's answer if it has ended. An ended call's reply carries every stored token
    from the offset, so its final is complete whatever was lost."""
    call_id = reply.call_id or stream.call_id or ""
    new: list[TokenDelta] = []
    if reply.token_ids:
        lps = (
            reply.logprobs
            if reply.logprobs and len(reply.logprobs) == len(reply.token_ids)
            else None
        )
        stored = TokenDelta(
            call_id=call_id, offset=reply.offset, token_ids=reply.token_ids, logprobs=lps
        )
        new = stream.deltas(stored)
    return new, reply.final or reply.error


def not_accepted(stream: CallStream, waited_s: float) -> CallError:
    """The explicit error for a call no frontend accepted within the accept timeout."""
    return CallError(
        code=ErrorCode.timeout,
        message=f"no frontend accepted the call within {waited_s:.1f}s (it may still have "
        f"been accepted: resubmit with client_call_id {stream.request.client_call_id!r} to "
        "get its answer without running it twice)",
        retryable=True,
    )


@dataclass
class CallTimers:
    """When the call's next resend (before acceptance) or resume (after) is due."""

    accept_by: float  # time.monotonic() past which an unaccepted call is given up
    silence_s: float  # a resume after this long without a message for an accepted call
    next_at: float  # the next resend or resume
    resend_s: float = 1.0  # wait for an answer to a resend; doubles up to 4 s
    retry_s: float = 0.25  # after a failed resume or a 503; doubles up to 2 s

    @classmethod
    def start(cls, now: float, accept_timeout: float, silence_s: float) -> CallTimers:
        return cls(accept_by=now + accept_timeout, silence_s=silence_s, next_at=now + 1.0)

    def sent(self, now: float) -> None:
        """A (re)submit went out: resend if nothing answers it in time."""
        self.next_at = min(now + self.resend_s, self.accept_by)
        self.resend_s = min(self.resend_s * 2, 4.0)

    def heard(self, now: float) -> None:
        """A message for the accepted call arrived: it is alive; the silence clock restarts."""
        self.next_at = now + self.silence_s
        self.retry_s = 0.25

    def retry_soon(self, now: float) -> None:
        """A resend bounced (no responders) or a resume got no answer: try again shortly."""
        self.next_at = now + self.retry_s
        self.retry_s = min(self.retry_s * 2, 2.0)

    def now_due(self, now: float) -> None:
        self.next_at = now
