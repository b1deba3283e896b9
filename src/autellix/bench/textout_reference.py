"""The whole-prefix output-text algorithm `src/autellix/backends/textout.py` used before it became
incremental, kept as the reference: tests/unit/test_textout.py checks that the incremental code
returns exactly what this returns, and `autellix bench textout` (`textout_cost`) measures both
(this is its baseline). Not used by the service."""

from __future__ import annotations

from collections.abc import Callable, Sequence


class WholePrefixOutputText:
    """The old O(n^2) algorithm: every prefix's text is a fresh `detokenize(tokens[:k])`."""

    def __init__(self, detokenize: Callable[[list[int]], str | None], stops: list[str]) -> None:
        self.detokenize = detokenize
        self.stops = tuple(s for s in stops if s)
        self._holdback = max((len(s) for s in self.stops), default=1) - 1
        self.stop_tokens: int | None = None
        self.stop_text: str | None = None
        self._searched = self._checked = 0
        self._delta_end: tuple[int, str] = (0, "")

    def text(self, tokens: Sequence[int], n: int | None = None) -> str | None:
        return self.detokenize(list(tokens[: len(tokens) if n is None else n]))

    def check(self, tokens: Sequence[int]) -> bool:
        if self.stop_tokens is not None:
            return True
        if not self.stops:
            return False
        for k in range(self._checked + 1, len(tokens) + 1):
            full = self.text(tokens, k)
            if full is None:
                return False
            start = max(0, self._searched - self._holdback)
            hits = [i for i in (full.find(s, start) for s in self.stops) if i >= 0]
            if hits:
                self.stop_text, self.stop_tokens = full[: min(hits)], k
                return True
            self._searched, self._checked = len(full), k
        return False

    def releasable(self, tokens: Sequence[int]) -> int:
        n = len(tokens)
        if self.stop_tokens is not None:
            return self.stop_tokens
        full = self.text(tokens)
        if full is None:
            return n
        if not self.stops or self._holdback == 0:
            return self._whole_characters(tokens, n)
        limit = len(full) - self._holdback
        k = n
        while k > 0 and len(self.text(tokens, k) or "") > limit:
            k -= 1
        return self._whole_characters(tokens, k)

    def _whole_characters(self, tokens: Sequence[int], k: int) -> int:
        """The largest j <= k whose text does not end in U+FFFD."""
        while k > 0 and (self.text(tokens, k) or "").endswith("\ufffd"):
            k -= 1
        return k

    def delta(self, tokens: Sequence[int], start: int, end: int) -> str | None:
        full = self.text(tokens, end)
        if full is None:
            return None
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
        if self.stop_text is not None:
            return self.stop_text
        return self.text(tokens)
