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

How, cheaply (why `_Prefixes`): stop strings are searched token by token and the holdback needs
the text length of every prefix, so decoding each prefix whole costs O(n^2) tokens per call
(seconds of event-loop CPU for a 4k-token output). Like vLLM's detokenizer (prefix_offset /
read_offset) the text of prefix k is instead the committed text plus the *difference* between
decoding a short window of recent tokens with and without the new one. The window starts a few
tokens before the committed end, so a SentencePiece word start or a UTF-8 character split at the
window's start affects both decodes alike and cancels out. Whenever that shortcut cannot be
trusted (the window's text ends in U+FFFD, i.e. a character is still incomplete; the window's
text no longer starts with its previous text; the context decodes to nothing) the prefix is
decoded whole, so the text is exactly `detokenize(tokens[:k])` for any tokenizer whose decoding is
local (a token changes the text of at most the few tokens before it), as real ones are. Cost:
~11 tokens decoded per output token with stop strings (every prefix), ~2 without (only the delta
ends), plus one whole decode per prefix that ends inside a character split over tokens (rare
characters in byte-level BPE): O(n) each, the price of exactness there (`autellix bench textout`).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

Detokenize = Callable[[list[int]], str | None]

REPLACEMENT = "\ufffd"  # what a decoder emits for an incomplete UTF-8 character
CONTEXT = 4  # tokens before the committed end that a window decodes again (vLLM uses 5)
WINDOW = 16  # longest window before its start moves up to `CONTEXT` tokens before the end


class _Rope:
    """Append-only text kept in pieces: appending a token's text to one `str` copies the whole
    text each time (O(n^2) again); slicing joins only the pieces it covers."""

    __slots__ = ("_ends", "_pieces")

    def __init__(self, text: str) -> None:
        self._pieces = [text]
        self._ends = [len(text)]

    def __len__(self) -> int:
        return self._ends[-1]

    def append(self, piece: str) -> None:
        if piece:
            self._pieces.append(piece)
            self._ends.append(self._ends[-1] + len(piece))

    def slice(self, a: int, b: int) -> str:
        """`text[a:b]` for 0 <= a."""
        b = min(b, len(self))
        if a >= b:
            return ""
        i = bisect_right(self._ends, a)  # the first piece that ends after `a`
        pos = self._ends[i - 1] if i else 0
        out = []
        while pos < b:
            piece = self._pieces[i]
            out.append(piece[max(0, a - pos) : b - pos])
            pos += len(piece)
            i += 1
        return "".join(out)

    def text(self) -> str:
        """The whole text; compacts the pieces so that joining again is cheap."""
        if len(self._pieces) > 1:
            self._pieces, self._ends = ["".join(self._pieces)], [len(self)]
        return self._pieces[0]


class _Prefixes:
    """The text of prefixes of one append-only token list, at O(window) tokens decoded per
    computed prefix. `dense` computes every prefix (stop strings are searched token by token and
    the holdback needs every prefix's length); otherwise only the prefixes asked for (delta ends),
    stepping straight from the last one. The text of a computed prefix k is the committed text's
    first `lens[i]` characters when `epochs[i]` is the current epoch (`ks[i] == k`); any other
    prefix (an incomplete character at its end, committed before a whole decode re-anchored the
    text, or never computed) is decoded whole on demand."""

    def __init__(self, detokenize: Detokenize, dense: bool) -> None:
        self._decode = detokenize
        self.dense = dense
        self.reset()

    def reset(self) -> None:
        empty = self._decode([])
        self.has_text = empty is not None
        self.toks: list[int] = []
        self.ks: list[int] = [0]  # the prefixes computed, ascending (dense: ks[i] == i)
        self.lens: list[int] = [len(empty or "")]  # their text lengths
        self.monotone = True  # lens never decreased: bisect finds the largest k under a length
        self._epoch = 0
        self._epochs: list[int] = [0]  # text(k) is a prefix of the committed text, or -1
        self._s = _Rope(empty or "")  # text(c), the committed text
        self._c = 0  # committed tokens
        self._p = 0  # the window's start; `_base` is decode(toks[_p:_c])
        self._base = empty or ""
        self._last: tuple[int, str] = (-1, "")  # the last prefix decoded whole

    def sync(self, tokens: Sequence[int], n: int) -> None:
        """Know `tokens[:n]`. Tokens are only appended (or cut after a stop string): a cheap spot
        check of the last known token catches a different list, which starts over."""
        have = len(self.toks)
        if have and (len(tokens) < have or tokens[have - 1] != self.toks[have - 1]):
            m = len(tokens)
            if m < have and (m == 0 or tokens[m - 1] == self.toks[m - 1]):
                self._cut(m)
            else:
                self.reset()
            have = len(self.toks)
        if n > have:
            self.toks.extend(tokens[have:n])

    def _cut(self, m: int) -> None:
        """Forget tokens after the first `m` (the runner drops those after a stop string)."""
        keep = bisect_right(self.ks, m)
        i = keep - 1
        while i > 0 and self._epochs[i] != self._epoch:
            i -= 1
        if self._epochs[i] != self._epoch:
            self.reset()
            return
        del self.toks[m:]
        del self.ks[keep:], self.lens[keep:], self._epochs[keep:]
        self._last = (-1, "")
        if self._c > self.ks[i]:
            self._s = _Rope(self._s.slice(0, self.lens[i]))
            self._commit_window(self.ks[i])

    def _commit_window(self, k: int) -> None:
        self._c = k
        self._p = max(0, k - CONTEXT)
        self._base = self._decode(self.toks[self._p : k]) or ""

    def ensure(self, n: int) -> bool:
        """Compute the prefix of `n` tokens (dense: and all before it), after `sync`; False
        without a tokenizer."""
        if not self.has_text:
            return False
        if self.dense:
            for k in range(self.ks[-1] + 1, n + 1):
                self._step(k)
        elif n > self.ks[-1]:
            self._step(n)
        return True

    def _record(self, k: int, length: int, epoch: int) -> None:
        if length < self.lens[-1]:
            self.monotone = False
        self.ks.append(k)
        self.lens.append(length)
        self._epochs.append(epoch)

    def _step(self, k: int) -> None:
        """text(k) from the committed state: the window's new text if it can be trusted, else
        the whole prefix decoded."""
        w = self._decode(self.toks[self._p : k]) or ""
        base = self._base
        if not w.endswith(REPLACEMENT) and w.startswith(base) and (base or self._p == 0):
            self._s.append(w[len(base) :])
            self._c, self._base = k, w
            self._record(k, len(self._s), self._epoch)
            if k - self._p >= WINDOW:
                self._commit_window(k)
            return
        full = w if self._p == 0 else self._decode(self.toks[:k]) or ""
        self._last = (k, full)
        if full.endswith(REPLACEMENT):  # an incomplete character: not final, do not commit
            self._record(k, len(full), -1)
            return
        committed = self._s.text()
        if full.startswith(committed):
            self._s.append(full[len(committed) :])
        else:  # the text changed before the committed end: it restarts from this prefix
            self._epoch += 1
            self._s = _Rope(full)
        self._record(k, len(full), self._epoch)
        self._commit_window(k)

    def _index(self, k: int) -> int:
        """Where prefix k is in `ks`, or -1 when it was not computed."""
        i = k if self.dense else bisect_left(self.ks, k)
        return i if i < len(self.ks) and self.ks[i] == k else -1

    def _whole(self, k: int) -> str:
        if self._last[0] != k:
            self._last = (k, self._decode(self.toks[:k]) or "")
        return self._last[1]

    def length(self, k: int) -> int:
        """len(text(k)) for k <= the last prefix computed."""
        i = self._index(k)
        return self.lens[i] if i >= 0 else len(self._whole(k))

    def slice(self, k: int, a: int, b: int) -> str:
        """`text(k)[a:b]` for 0 <= a, k <= the last prefix computed."""
        i = self._index(k)
        if i >= 0 and self._epochs[i] == self._epoch:
            return self._s.slice(a, min(b, self.lens[i]))
        return self._whole(k)[a:b]


def _clamp(n: int | None, size: int) -> int:
    """How many items `seq[:n]` has, for a sequence of `size` items."""
    return size if n is None else len(range(size)[:n])


@dataclass
class OutputText:
    """Tracks one call's output tokens against its stop strings. Pure: no I/O, no backend state.
    The tokens passed to every method are one list that only grows (or is cut to `stop_tokens`)."""

    detokenize: Detokenize
    stops: Sequence[str] = ()
    _holdback: int = field(init=False, default=0)
    stop_tokens: int | None = field(init=False, default=None)  # tokens kept once a stop matched
    stop_text: str | None = field(init=False, default=None)  # final text once a stop matched
    _searched: int = field(init=False, default=0)  # text length already searched
    _checked: int = field(init=False, default=0)  # tokens already searched
    _pre: _Prefixes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.stops = tuple(s for s in self.stops if s)
        self._holdback = max((len(s) for s in self.stops), default=1) - 1
        self._pre = _Prefixes(self.detokenize, dense=bool(self.stops))

    @property
    def has_text(self) -> bool:
        return self.detokenize([]) is not None

    def _known(self, tokens: Sequence[int], n: int) -> bool:
        """Compute the prefix of `n` tokens (with stop strings: every prefix up to it); False
        without a tokenizer."""
        self._pre.sync(tokens, n)
        return self._pre.ensure(n)

    def text(self, tokens: Sequence[int], n: int | None = None) -> str | None:
        """Text of the first `n` output tokens (all by default)."""
        k = _clamp(n, len(tokens))
        if not self._known(tokens, k):
            return None
        return self._pre.slice(k, 0, self._pre.length(k))

    def check(self, tokens: Sequence[int]) -> bool:
        """After new tokens: True when a stop string is now complete (then `stop_tokens` and
        `stop_text` say where the output ends). Idempotent once stopped."""
        if self.stop_tokens is not None:
            return True
        if not self.stops:
            return False
        if not self._known(tokens, len(tokens)):
            return False  # no tokenizer, no text: the runner refuses stop strings then
        lens = self._pre.lens  # every prefix's (stop strings make the prefixes dense)
        # token by token, so that with several new tokens at once the stop string that completed
        # first wins (as when they arrive one per step); only the text that may hold a new match
        # (from `holdback` characters before what was searched) is looked at
        for k in range(self._checked + 1, len(tokens) + 1):
            start = max(0, self._searched - self._holdback)
            tail = self._pre.slice(k, start, lens[k])
            hits = [i for i in (tail.find(s) for s in self.stops) if i >= 0]
            if hits:
                self.stop_text = self._pre.slice(k, 0, start + min(hits))
                self.stop_tokens = k
                return True
            self._searched, self._checked = lens[k], k
        return False

    def releasable(self, tokens: Sequence[int], sent: int = 0) -> int:
        """How many of the output tokens may be streamed now: all of them without stop strings;
        with them, those whose text ends at least `holdback` characters before the end. Either
        way not a tail whose text ends in U+FFFD (`_whole_characters`); `sent` tokens are
        already streamed, the answer is then at least that."""
        n = len(tokens)
        if self.stop_tokens is not None:
            return self.stop_tokens
        if not self._known(tokens, n):
            return n  # no tokenizer: no text, no stop strings
        if not self.stops or self._holdback == 0:
            return self._whole_characters(n, sent)
        lens = self._pre.lens
        limit = lens[n] - self._holdback
        if self._pre.monotone:  # the largest k whose text is no longer than `limit`
            k = max(0, bisect_right(lens, limit, 0, n + 1) - 1)
        else:
            k = n
            while k > 0 and lens[k] > limit:
                k -= 1
        return self._whole_characters(k, sent)

    def _whole_characters(self, k: int, sent: int) -> int:
        """The largest j <= k (and >= `sent`) whose text does not end in U+FFFD. Why: a
        character split over tokens (byte-level BPE) decodes to U+FFFD until its last byte
        comes, and a delta is the difference of two prefixes' texts, so a delta ending in that
        U+FFFD would leave it in the caller's concatenated stream where the final text has the
        real character. vLLM's detokenizer holds such text back the same way; invalid bytes
        that stay U+FFFD are sent with the next whole character (or at the end)."""
        for j in range(k, sent - 1, -1):
            length = self._pre.length(j)
            if length == 0 or self._pre.slice(j, length - 1, length) != REPLACEMENT:
                return j
        return min(sent, k)

    def delta(self, tokens: Sequence[int], start: int, end: int) -> str | None:
        """Text added by tokens[start:end], as the difference of two prefixes' texts; clipped to
        the stop-truncated text once a stop matched."""
        end, start = _clamp(end, len(tokens)), _clamp(start, len(tokens))
        if not self._known(tokens, max(start, end)):
            return None
        before = self._pre.length(start)
        if self.stop_text is not None and end >= (self.stop_tokens or 0):
            return self.stop_text[before:]
        return self._pre.slice(end, before, self._pre.length(end))

    def final(self, tokens: Sequence[int]) -> str | None:
        """The call's whole output text."""
        if self.stop_text is not None:
            return self.stop_text
        return self.text(tokens)
