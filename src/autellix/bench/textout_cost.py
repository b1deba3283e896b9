"""`autellix bench textout`: detokenization cost of a call's output text
(src/autellix/backends/textout.py), the old whole-prefix algorithm vs the incremental one, for
1k/4k/16k-token outputs with and without stop strings.

Why: `OutputText` runs on the engine service's event loop for every streamed call. The old code
decoded the whole output prefix once per new token (stop strings), per step back of the holdback
scan and per delta: O(n^2) tokens decoded. This prints, per case, wall time and tokens decoded per
output token for both, and checks that both give the same answers (deltas, stops, final text).

The old algorithm is the baseline kept in `autellix.bench.textout_reference`
(`WholePrefixOutputText`, as textout.py was before it became incremental). The calls are made
as the runner makes them: one token at a time, `check` after each (with stop strings),
`releasable` + `delta` every `--flush-every` tokens, then the last delta and `final`.
Tokenizers: a toy SentencePiece-like word-piece one (pure Python) and, when the `tokenizers`
package is importable, a real byte-level BPE trained in memory here (offline). Its text mixes in
words unseen in training (CJK, emoji), whose UTF-8 bytes split over several tokens: a worst case
for the incremental one (every prefix that ends inside a character is decoded whole, to stay
exact). The old algorithm is not run where it would take over `--old-budget` seconds (its time
grows as n^2: estimated from the previous size, and printed with "~").

    autellix bench textout [--sizes 1000,4000,16000] [--flush-every 8] [--old-budget 2]
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from autellix.backends.textout import OutputText
from autellix.bench.textout_reference import WholePrefixOutputText

Decode = Callable[[list[int]], str | None]
STOPS = ["\n\nUser:", "###"]  # never in these outputs: the whole output is searched


class Counting:
    """Counts the tokens a tokenizer decodes."""

    def __init__(self, decode: Decode) -> None:
        self.decode, self.tokens = decode, 0

    def __call__(self, ids: list[int]) -> str | None:
        self.tokens += len(ids)
        return self.decode(ids)


def toy_tokenizer(seed: int = 1) -> tuple[Decode, Callable[[int], list[int]]]:
    """A SentencePiece-like word-piece tokenizer: 2,000 pieces, "▁" marks a word start."""
    rng = random.Random(seed)
    letters = "etaoinshrdlucmfwypvbgkjqxz"
    vocab = [
        ("▁" if rng.random() < 0.6 else "") + "".join(rng.choices(letters, k=rng.randint(1, 6)))
        for _ in range(1990)
    ] + list(".,;:!?'\"()")

    def decode(ids: list[int]) -> str:
        s = "".join(map(vocab.__getitem__, ids)).replace("▁", " ")
        return s[1:] if s.startswith(" ") else s

    return decode, lambda n: [rng.randrange(len(vocab)) for _ in range(n)]


def bpe_tokenizer() -> tuple[Decode, Callable[[int], list[int]]] | None:
    """A real byte-level BPE (the `tokenizers` package), trained in memory: no download."""
    try:
        from tokenizers import ByteLevelBPETokenizer
    except ImportError:
        return None
    rng = random.Random(2)
    words = "the of and to in is that for it as with was on be by this are from at or an".split()
    words += ["café", "naïve", "Größe", "東京", "日本語", "テキスト", "😀", "🚀", "€", "→"]

    def sentence() -> str:
        return " ".join(rng.choices(words, k=rng.randint(4, 16))) + ". "

    corpus = ["".join(sentence() for _ in range(20)) for _ in range(200)]
    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(corpus, vocab_size=600, min_frequency=2, show_progress=False)
    words += ["中文字符", "🎉", "ℵ"]  # unseen in training: their UTF-8 bytes split over tokens
    sample = tok.encode("".join(sentence() for _ in range(400))).ids

    def decode(ids: list[int]) -> str:
        return str(tok.decode(ids))

    def stream(n: int) -> list[int]:
        return (sample * (n // len(sample) + 1))[:n]

    return decode, stream


def run(
    cls: Any, decode: Decode, toks: list[int], stops: list[str], every: int
) -> tuple[float, float, list[object]]:
    """Stream `toks` through one tracker as the runner does: (seconds, decoded/token, answers)."""
    counter = Counting(decode)
    out = cls(counter, stops)
    log: list[object] = []
    tokens: list[int] = []
    sent = 0
    t0 = time.perf_counter()
    for tok in toks:
        tokens.append(tok)
        if out.stops and out.check(tokens):
            del tokens[out.stop_tokens :]
            break
        if len(tokens) % every == 0:
            upto = out.releasable(tokens)
            if upto > sent:
                log.append(out.delta(tokens, sent, upto))
                sent = upto
    log.append(out.delta(tokens, sent, len(tokens)))
    log.append(out.final(tokens))
    return time.perf_counter() - t0, counter.tokens / len(toks), log


def textout_cost(
    sizes: list[int],
    flush_every: int = 8,
    old_budget: float = 2.0,
    echo: Callable[[str], None] = print,
) -> None:
    """Print the Markdown table: per tokenizer, output size and stop strings (none, or some that
    never match), both algorithms' seconds and tokens decoded per output token, the speed-up.
    Raises AssertionError where the two give different answers (deltas, stops, final text)."""
    tokenizers = {"toy word-piece": toy_tokenizer()}
    bpe = bpe_tokenizer()
    if bpe is not None:
        tokenizers["byte-level BPE"] = bpe
    echo(f"flush every {flush_every} tokens; stop strings {STOPS!r} (never matched)\n")
    echo("| tokenizer | tokens | stops | old s | old dec/tok | new s | new dec/tok | speed-up |")
    echo("|---|---:|---|---:|---:|---:|---:|---:|")
    for name, (decode, stream) in tokenizers.items():
        last: dict[bool, tuple[int, float]] = {}  # stops? -> the old's last (size, seconds)
        for n in sizes:
            toks = stream(n)
            for stops in ([], STOPS):
                new_s, new_d, new_log = run(OutputText, decode, toks, stops, flush_every)
                prev_n, prev_s = last.get(bool(stops), (n, 0.0))
                guess = prev_s * (n / prev_n) ** 2
                if guess <= old_budget:
                    old_s, old_d, old_log = run(
                        WholePrefixOutputText, decode, toks, stops, flush_every
                    )
                    if old_log != new_log:
                        raise AssertionError(f"{name} {n} {stops}: answers differ")
                    last[bool(stops)] = (n, old_s)
                    old, speed = f"| {old_s:.3f} | {old_d:,.0f} ", f"{old_s / new_s:,.0f}x"
                else:
                    old, speed = f"| ~{guess:.0f} (est.) | - ", f"~{guess / new_s:,.0f}x"
                echo(
                    f"| {name} | {n:,} | {'yes' if stops else 'no'} {old}"
                    f"| {new_s:.3f} | {new_d:.1f} | {speed} |"
                )
    echo("\n~ (est.): the old algorithm not run (n^2 from the previous size); answers of old and")
    echo("new compared (equal) wherever both ran. dec/tok: tokens decoded per output token.")
