"""Wire protocol v1 basics: version, size and depth limits, id pattern, and the two message
bases (`_Msg` refuses unknown fields, `_Extensible` ignores them, and why).
"""

from __future__ import annotations

import re
from typing import Annotated, TypeVar

from pydantic import BaseModel, ConfigDict, Field

PROTOCOL_VERSION = 1
M = TypeVar("M", bound="BaseModel")
MAX_PROMPT_CHARS = 1_000_000  # hard cap on text prompts; engines enforce model length themselves
MAX_PROMPT_TOKENS = 262_144
MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # reject anything larger before parsing
#: deepest JSON nesting any message may have (checked before parsing: a deep document would
#: otherwise build a deep object and hit the interpreter's recursion limit)
MAX_JSON_DEPTH = 64
#: largest token id on the wire (Postgres stores token ids as int4); an engine refuses ids its
#: own model's vocabulary does not have
MAX_TOKEN_ID = 2**31 - 1
#: what a Dispatch adds around its CallRequest (ids, reply subject, trace, numbers), and what a
#: generated token id costs in a Dispatch's resume tokens or a CallFinal's token list (up to 7
#: digits and a comma: vocabularies stay below 10 million): used to refuse a call at the door
#: whose messages could not be delivered (`delivery_size`)
DISPATCH_OVERHEAD_BYTES = 4096
BYTES_PER_TOKEN_ID = 8
#: most candidate tokens per position a call may ask logprobs for (OpenAI's and vLLM's bound)
MAX_TOP_LOGPROBS = 20
#: what one log-probability entry costs in a TokenDelta or CallFinal: id, token text, float and
#: UTF-8 bytes as JSON (measured ~110 bytes for a 6-byte token; 256 leaves room for tokens of
#: up to ~30 bytes); a call with logprobs carries 1 + top_logprobs entries per token
BYTES_PER_LOGPROB = 256
_ID_RE = r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$"
_NAMESPACE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$")

Id = Annotated[str, Field(pattern=_ID_RE, description="1-128 chars: letters, digits, _ . : -")]


class _Msg(BaseModel):
    """What callers send (requests): unknown fields are an error, so a caller's typo
    (`max_token`) is reported instead of silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class _Extensible(BaseModel):
    """What services send (replies to callers, and messages between services): unknown fields
    are ignored. Why: within protocol v1 a newer service may add optional fields, and the peers
    not yet upgraded (a client library, a scheduler replica during a rolling upgrade) must keep
    reading its messages. Fields are only ever added, optional; removing or retyping one is a
    new protocol version (docs/protocol.md, "Compatibility")."""

    model_config = ConfigDict(extra="ignore", frozen=True)
