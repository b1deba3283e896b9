"""Turn a linear chat transcript (token counts per message) into a single-threaded program.

Shared by ShareGPT and BFCL, real or synthetic: the only difference between them is where the
token counts and delays come from. A program issues one call per assistant message; its prompt is
everything before that message, and the prefix it can reuse from the cache is the previous call's
prompt plus its output (the context the engine already holds for this program).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from autellix.workloads.tokens import MESSAGE_OVERHEAD
from autellix.workloads.types import CallSpec


@dataclass(frozen=True, slots=True)
class Message:
    """One message of a transcript: `assistant` messages become calls.

    delay_s on an assistant message: the tool / human time before that call is issued (after the
    previous call finished).
    """

    role: str  # "assistant" or anything else (user, system, tool)
    tokens: int
    delay_s: float = 0.0


def transcript_to_calls(
    messages: Sequence[Message], *, max_context_tokens: int, base_tokens: int = 0
) -> tuple[CallSpec, ...]:
    """Calls for each assistant message, stopping at the first that exceeds the context limit.

    base_tokens: a prompt part every call carries before the messages (system prompt, function
    docs). Every message adds `MESSAGE_OVERHEAD` template tokens to the context.
    """
    calls: list[CallSpec] = []
    context = base_tokens
    prev_context = 0  # context held by the engine after the previous call (prompt + output)
    for m in messages:
        if m.role != "assistant":
            context += m.tokens + MESSAGE_OVERHEAD
            continue
        prompt = max(1, context + MESSAGE_OVERHEAD)  # + the assistant header
        out = max(0, m.tokens)
        if prompt + out > max_context_tokens:
            break
        idx = len(calls)
        calls.append(
            CallSpec(
                index=idx,
                thread_id=0,
                parents=(idx - 1,) if idx else (),
                prompt_tokens=prompt,
                output_tokens=out,
                prefix_tokens=min(prev_context, prompt),
                delay_s=m.delay_s,
            )
        )
        context = prompt + out
        prev_context = context
    return tuple(calls)
