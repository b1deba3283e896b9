"""A call's output text: prefix-stable incremental detokenization and OpenAI-style stop strings.

Why this lives in the engine service and not in a backend: a call's output is produced in
*segments* (a preempted call resumes as a new backend request), so only the service sees the whole
output; and backends run without detokenization (`detokenize=False` in vLLM) so that token ids,
not text, are the unit of accounting, resumption and streaming offsets.

Rules (the OpenAI / vLLM semantics):
* Text is always computed from the whole output so far (`detokenize(tokens[:n])`) and a delta's
  text is the difference between two such prefixes. Detokenizing a slice on its own is wrong for
  real tokenizers (a SentencePiece "▁" word start, a UTF-8 character split over two tokens).
* A stop string ends the call with `finish_reason="stop"`; the returned text ends just before the
  stop string; the token ids include the tokens up to the one that completed it (as vLLM does), so
  usage counts every generated token once.
* While streaming, the last `max(len(stop)) - 1` characters are held back (with the tokens they
  came from): they might be the start of a stop string, which must never reach the caller.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

Detokenize = Callable[[list[int]], str | None]


@dataclass
class OutputText:
    """Tracks one call's output tokens against its stop strings. Pure: no I/O, no backend state."""

    detokenize: Detokenize
    stops: Sequence[str] = ()
    _holdback: int = field(init=False, default=0)
    stop_tokens: int | None = field(init=False, default=None)  # tokens kept once a stop matched
    stop_text: str | None = field(init=False, default=None)  # final text once a stop matched
    _searched: int = field(init=False, default=0)  # text length already searched
    _checked: int = field(init=False, default=0)  # tokens already searched
    _delta_end: tuple[int, str] = field(init=False, default=(0, ""))  # last delta's end, text

    def __post_init__(self) -> None:
        self.stops = tuple(s for s in self.stops if s)
        self._holdback = max((len(s) for s in self.stops), default=1) - 1

    @property
    def has_text(self) -> bool:
        return self.detokenize([]) is not None

    def text(self, tokens: Sequence[int], n: int | None = None) -> str | None:
        """Text of the first `n` output tokens (all by default)."""
        return self.detokenize(list(tokens[: len(tokens) if n is None else n]))

    def check(self, tokens: Sequence[int]) -> bool:
        """After new tokens: True when a stop string is now complete (then `stop_tokens` and
        `stop_text` say where the output ends). Idempotent once stopped."""
        if self.stop_tokens is not None:
            return True
        if not self.stops:
            return False
        # token by token, so that with several new tokens at once the stop string that completed
        # first wins (as when they arrive one per step)
        for k in range(self._checked + 1, len(tokens) + 1):
            full = self.text(tokens, k)
            if full is None:  # no tokenizer, no text: the runner refuses stop strings then
                return False
            start = max(0, self._searched - self._holdback)
            hits = [i for i in (full.find(s, start) for s in self.stops) if i >= 0]
            if hits:
                self.stop_text, self.stop_tokens = full[: min(hits)], k
                return True
            self._searched, self._checked = len(full), k
        return False

    def releasable(self, tokens: Sequence[int]) -> int:
        """How many of the output tokens may be streamed now: all of them without stop strings;
        with them, those whose text ends at least `holdback` characters before the end."""
        n = len(tokens)
        if self.stop_tokens is not None:
            return self.stop_tokens
        if not self.stops or self._holdback == 0:
            return n
        full = self.text(tokens)
        if full is None:
            return n
        limit = len(full) - self._holdback
        k = n
        while k > 0 and len(self.text(tokens, k) or "") > limit:
            k -= 1
        return k

    def delta(self, tokens: Sequence[int], start: int, end: int) -> str | None:
        """Text added by tokens[start:end], as the difference of two prefixes' texts; clipped to
        the stop-truncated text once a stop matched."""
        full = self.text(tokens, end)
        if full is None:
            return None
        # deltas are streamed in order, so the previous one's end text is this one's start text
        # (output tokens are only ever appended): one detokenization per delta, not two
        if start == self._delta_end[0]:
            before = self._delta_end[1]
        else:
            before = self.text(tokens, start) or ""
        self._delta_end = (end, full)
        after = full
        if self.stop_text is not None and end >= (self.stop_tokens or 0):
            after = self.stop_text
        return after[len(before) :]

    def final(self, tokens: Sequence[int]) -> str | None:
        """The call's whole output text."""
        if self.stop_text is not None:
            return self.stop_text
        return self.text(tokens)
