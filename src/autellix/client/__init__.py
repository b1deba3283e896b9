"""Python client for Autellix: programs, threads, calls and token streams over NATS.

```python
async with Client("nats://127.0.0.1:4222", namespace="autellix") as c:
    async with c.program() as p:                      # opens a program, closes it on exit
        r = await p.call(prompt="Plan the trip", max_tokens=64)
        a, b = await asyncio.gather(                  # two parallel threads, both after r
            p.thread("a").call(prompt="...", parents=[r]),
            p.thread("b").call(prompt="...", parents=[r]),
        )
        async for item in p.stream(prompt="Summarize", max_tokens=32):
            if isinstance(item, TokenDelta): print(item.text, end="")
            else: print(item.usage)                   # the CallResult, last
```

How a call travels: the client publishes a `CallRequest` to `Subjects.submit` with a reply
subject under its own inbox prefix (one wildcard subscription serves every call of the client),
then reads `CallAccepted`, `TokenDelta`s and one `CallFinal` (or a `CallError`) from it. Deltas
are de-duplicated by offset (after an engine is lost, its successor may resend tokens the client
already has). Failures raise `CallFailed` carrying the protocol's `CallError` (`.code`,
`.retryable`); a call that takes longer than its timeout raises `CallTimeout`.

To make a call safe to retry, pass `client_call_id`: resubmitting it never runs the call twice,
and returns the stored result if the first attempt already finished.

Cancelling: `await client.cancel(call_id)` (or `program_id=`, `client_call_id=`) stops a call
wherever it is and answers whether it did. A task awaiting `call()` that is cancelled, or a
`stream()` abandoned before its result (task cancelled, generator closed), cancels its call too:
the client sends `CallCancel` best-effort in the background (waiting briefly for the call id if
`CallAccepted` had not arrived yet) and the cancellation propagates at once. A client-side
timeout (`CallTimeout`) does not cancel: the call may still finish and can be collected again
with its `client_call_id`.

Everything here is importable from `autellix.client`; the modules behind it have one job each:
`connection` (the `Client`), `program` (`Program`, `Thread`), `streaming` (replies folded into
de-duplicated deltas and the result), `results` (`CallResult`), `errors` (`CallFailed`,
`CallTimeout`) and `tracing` (the call spans). The protocol types a caller meets in requests and
results are re-exported too.
"""

from __future__ import annotations

from autellix.client.connection import DEFAULT_NATS_URL, Client
from autellix.client.errors import CallFailed, CallTimeout
from autellix.client.program import Program, Thread
from autellix.client.results import CallResult
from autellix.runtime.nats_connect import NatsConnectError
from autellix.wire.protocol import (
    CALL_REPLY,
    CallAccepted,
    CallCancel,
    CallCancelReply,
    CallError,
    CallFinal,
    CallRequest,
    ChatMessage,
    EngineInfo,
    ErrorCode,
    ProgramClose,
    ProgramOpen,
    ProgramReply,
    SamplingParams,
    Subjects,
    Timing,
    TokenDelta,
    Usage,
    encode,
)

__all__ = [
    "CALL_REPLY",
    "DEFAULT_NATS_URL",
    "CallAccepted",
    "CallCancel",
    "CallCancelReply",
    "CallError",
    "CallFailed",
    "CallFinal",
    "CallRequest",
    "CallResult",
    "CallTimeout",
    "ChatMessage",
    "Client",
    "EngineInfo",
    "ErrorCode",
    "NatsConnectError",
    "Program",
    "ProgramClose",
    "ProgramOpen",
    "ProgramReply",
    "SamplingParams",
    "Subjects",
    "Thread",
    "Timing",
    "TokenDelta",
    "Usage",
    "encode",
]
