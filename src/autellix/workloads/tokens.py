"""Token counting: a real tokenizer when a `tokenizer.json` is given, else a documented estimate.

The estimate is ~4 characters per token (OpenAI's and Hugging Face's rule of thumb for English
text and code; Llama-3's tokenizer gives 3.5-4.5 on ShareGPT). Chat templates add a few tokens per
message (role header and end-of-turn marker: 4-5 for Llama-3), counted as `MESSAGE_OVERHEAD`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Protocol

CHARS_PER_TOKEN = 4.0
MESSAGE_OVERHEAD = 4


class TokenCounter(Protocol):
    """Counts the tokens of a text; `name` says how, for the run's provenance."""

    name: str

    def count(self, text: str) -> int: ...

    def count_many(self, texts: list[str]) -> list[int]: ...


class CharEstimate:
    """ceil(len(text) / 4): no tokenizer needed, deterministic, within ~15% on English."""

    name = f"estimate ({CHARS_PER_TOKEN:g} chars/token)"

    def count(self, text: str) -> int:
        return math.ceil(len(text) / CHARS_PER_TOKEN)

    def count_many(self, texts: list[str]) -> list[int]:
        return [self.count(t) for t in texts]


class HFTokenizer:
    """A Hugging Face `tokenizers` tokenizer loaded from a local tokenizer.json (no hub access)."""

    def __init__(self, path: str | Path) -> None:
        from tokenizers import Tokenizer  # local import: only needed when a file is given

        self._tok = Tokenizer.from_file(str(path))
        self.name = f"tokenizer {Path(path).name}"

    def count(self, text: str) -> int:
        return len(self._tok.encode(text, add_special_tokens=False).ids)

    def count_many(self, texts: list[str]) -> list[int]:
        if not texts:
            return []
        encs = self._tok.encode_batch(texts, add_special_tokens=False)
        return [len(e.ids) for e in encs]


def make_counter(tokenizer: str | Path | None) -> TokenCounter:
    """The tokenizer at `tokenizer` (a tokenizer.json), or the character estimate when None."""
    return HFTokenizer(tokenizer) if tokenizer else CharEstimate()
