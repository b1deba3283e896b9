"""Output text of a call: prefix-stable deltas and stop strings (backends/textout.py)."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from autellix.backends.textout import OutputText
from autellix.bench.textout_reference import WholePrefixOutputText

ALPHABET = "abcdxy "


def chars(ids: list[int]) -> str:
    """A character-level tokenizer: token i is ALPHABET[i]."""
    return "".join(ALPHABET[i] for i in ids)


def words(ids: list[int]) -> str:
    """A word-level tokenizer like the sim backend's: every token is ' w<i>'."""
    return "".join(f" w{i}" for i in ids)


def ids(text: str) -> list[int]:
    return [ALPHABET.index(c) for c in text]


def stream(out: OutputText, tokens: list[int], flush_every: int = 1) -> tuple[str, int, bool]:
    """Feed tokens one by one as a runner does; return (streamed text, tokens sent, stopped)."""
    got, sent, stopped = "", 0, False
    for n in range(1, len(tokens) + 1):
        have = tokens[:n]
        stopped = out.check(have)
        if stopped or n % flush_every == 0 or n == len(tokens):
            upto = out.releasable(have) if not (n == len(tokens) or stopped) else None
            end = out.stop_tokens if stopped else (n if upto is None else upto)
            if end > sent:
                got += out.delta(have, sent, end) or ""
                sent = end
        if stopped:
            break
    return got, sent, stopped


def test_without_stops_everything_streams_at_once() -> None:
    out = OutputText(chars)
    toks = ids("abcd")
    assert not out.check(toks)
    assert out.releasable(toks) == 4
    assert out.final(toks) == "abcd"
    assert out.delta(toks, 1, 3) == "bc"


def test_stop_string_truncates_text_and_keeps_its_tokens() -> None:
    out = OutputText(chars, ["cd"])
    assert out.releasable(ids("a")) == 0  # "a" could start... no, but 1 char is held back
    assert out.releasable(ids("ab")) == 1
    assert not out.check(ids("abc"))
    assert out.releasable(ids("abc")) == 2  # "c" may be the start of "cd": held back
    assert out.check(ids("abcd"))
    assert out.stop_tokens == 4 and out.stop_text == "ab"
    assert out.final(ids("abcdxx")) == "ab"
    assert out.delta(ids("abcd"), 2, 4) == ""  # the held-back "c" never reaches the caller


def test_earliest_stop_wins_and_stop_at_start() -> None:
    out = OutputText(chars, ["dx", "b"])
    assert out.check(ids("abdx"))
    assert out.stop_text == "a" and out.stop_tokens == 2
    first = OutputText(chars, ["a"])
    assert first.check(ids("a"))
    assert first.stop_text == "" and first.stop_tokens == 1


def test_stop_spanning_word_tokens() -> None:
    out = OutputText(words, ["w3 w4"])
    toks = [1, 2, 3]
    assert not out.check(toks)
    assert out.check([1, 2, 3, 4, 5])
    assert out.stop_text == " w1 w2 " and out.stop_tokens == 4


def test_no_tokenizer_means_no_text_and_no_stops() -> None:
    out = OutputText(lambda _ids: None, ["x"])
    assert not out.has_text
    assert not out.check([1, 2])
    assert out.releasable([1, 2]) == 2 and out.final([1, 2]) is None


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(alphabet=ALPHABET, max_size=30),
    stops=st.lists(st.text(alphabet=ALPHABET, min_size=1, max_size=4), max_size=3),
    flush_every=st.integers(min_value=1, max_value=5),
)
def test_streamed_text_is_the_final_text_and_never_holds_a_stop(
    text: str, stops: list[str], flush_every: int
) -> None:
    toks = ids(text)
    out = OutputText(chars, stops)
    got, sent, stopped = stream(out, toks, flush_every)
    final = out.final(toks[:sent] if stopped else toks)
    assert got == final
    assert all(s not in final for s in stops)
    assert text.startswith(final)
    # the first token count at which some stop string is complete; the output ends before the
    # earliest of the stop strings complete then
    done = next((k for k in range(1, len(text) + 1) if any(s in text[:k] for s in stops)), None)
    if done is not None:
        assert stopped and sent == done
        assert final == text[: min(text[:done].find(s) for s in stops if s in text[:done])]
    else:
        assert not stopped and final == text and sent == len(toks)


# ---------------------------------------------------------------- incremental == whole-prefix
# The reference: the whole-prefix algorithm textout.py used before it became incremental (a copy
# kept here on purpose: the property below says the new code returns exactly what it did).


SP_VOCAB = ["▁a", "b", "▁", "▁c", "d", "", "▁b"]  # "" decodes to nothing (a skipped special)


def sentencepiece(ids: list[int]) -> str:
    """SentencePiece-like: "▁" is a space, and the text's leading space is dropped."""
    s = "".join(SP_VOCAB[i] for i in ids).replace("▁", " ")
    return s[1:] if s.startswith(" ") else s


BYTE_VOCAB = [b"a", b" ", b"\xc3", b"\xa9", b"\xc3\xa9", b"\xe2\x82", b"\xac", b"\xf0\x9f"]
BYTE_VOCAB += [b"\x98\x80", b"a\xc3", b"\xa9b", b""]  # é = c3 a9, € = e2 82 ac, 😀 = f09f9880


def byte_level(ids: list[int]) -> str:
    """Byte-level BPE-like: a character may span tokens; an incomplete one decodes to U+FFFD,
    so a prefix's text is NOT always a prefix of the next one's."""
    return b"".join(BYTE_VOCAB[i] for i in ids).decode("utf-8", errors="replace")


CLEAN_VOCAB = ["a", " ", ".", "b", "<"]


def cleanup(ids: list[int]) -> str:
    """NOT prefix-stable, like HF's clean_up_tokenization_spaces: " ." becomes "." once the "."
    arrives, and " <" deletes the space before it (a prefix's text may even get shorter)."""
    return "".join(CLEAN_VOCAB[i] for i in ids).replace(" .", ".").replace(" <", "")


# (tokenizer, vocabulary size, characters that stop strings are made of)
TOKENIZERS: dict[str, tuple[Callable[[list[int]], str], int, str]] = {
    "chars": (chars, len(ALPHABET), ALPHABET),
    "words": (words, 12, " w0123456789"),
    "sentencepiece": (sentencepiece, len(SP_VOCAB), "abcd "),
    "byte_level": (byte_level, len(BYTE_VOCAB), "a bé€😀\ufffd"),
    "cleanup": (cleanup, len(CLEAN_VOCAB), "a .b<"),
}


def drive(out: Any, toks: list[int], chunks: list[int], flushes: list[bool]) -> list[object]:
    """Feed `toks` as the runner does (chunks of new tokens; check; flush now and then; after a
    stop cut the tokens and flush the rest) and log every answer."""
    log: list[object] = []
    tokens: list[int] = []
    sent = i = 0
    for size, flush in zip(chunks, flushes, strict=False):
        if i >= len(toks):
            break
        tokens.extend(toks[i : i + size])
        i += size
        stopped = out.check(tokens)
        log.append(("check", stopped, out.stop_tokens, out.stop_text))
        if stopped:
            del tokens[out.stop_tokens :]
            break
        if flush:
            upto = out.releasable(tokens)
            log.append(("releasable", upto))
            if upto > sent:
                log.append(("delta", sent, upto, out.delta(tokens, sent, upto)))
                sent = upto
    if sent < len(tokens):
        log.append(("delta", sent, len(tokens), out.delta(tokens, sent, len(tokens))))
    log.append(("final", out.final(tokens)))
    log.extend(("text", n, out.text(tokens, n)) for n in (0, len(tokens) // 2, None))
    return log


@settings(max_examples=400, deadline=None)
@given(data=st.data(), name=st.sampled_from(sorted(TOKENIZERS)))
def test_incremental_equals_whole_prefix_decoding(data: st.DataObject, name: str) -> None:
    tok, vocab, alphabet = TOKENIZERS[name]
    toks = data.draw(st.lists(st.integers(0, vocab - 1), max_size=60), label="tokens")
    stops = data.draw(
        st.lists(st.text(alphabet=alphabet, min_size=1, max_size=5), max_size=3), label="stops"
    )
    chunks = data.draw(st.lists(st.integers(1, 4), min_size=60, max_size=60), label="chunks")
    flushes = data.draw(st.lists(st.booleans(), min_size=60, max_size=60), label="flushes")
    new = drive(OutputText(tok, stops), toks, chunks, flushes)
    old = drive(WholePrefixOutputText(tok, stops), toks, chunks, flushes)
    assert new == old


def test_long_byte_level_output_matches_whole_prefix() -> None:
    """Past the window's size, with characters split over tokens all along the output."""
    rng = random.Random(7)
    toks = [rng.randrange(len(BYTE_VOCAB)) for _ in range(400)]
    flushes = [rng.random() < 0.3 for _ in range(400)]
    for stops in ([], ["€ a"], ["zz"]):
        new = drive(OutputText(byte_level, stops), toks, [1] * 400, flushes)
        old = drive(WholePrefixOutputText(byte_level, stops), toks, [1] * 400, flushes)
        assert new == old


class Counting:
    """A tokenizer that counts the tokens it decodes (the work detokenization costs)."""

    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self.decode, self.tokens, self.calls = decode, 0, 0

    def __call__(self, ids: list[int]) -> str:
        self.tokens += len(ids)
        self.calls += 1
        return self.decode(ids)


def decoded_per_token(out_cls: Any, n: int) -> float:
    """Stream `n` word tokens with a stop string that completes at the very end, flushing every 16
    tokens as the runner's delta_max_tokens does; tokens decoded per output token."""
    counter = Counting(words)
    out = out_cls(counter, ["w7 w7 w7"])  # a holdback of 7 characters
    toks = [i % 7 for i in range(n - 3)] + [7, 7, 7]
    chunks, flushes = [1] * n, [(k + 1) % 16 == 0 for k in range(n)]
    log = drive(out, toks, chunks, flushes)
    assert log[-4] == ("final", words(toks[: n - 3]) + " ")
    return counter.tokens / n


def test_detokenization_work_is_linear_in_the_output() -> None:
    assert decoded_per_token(OutputText, 4000) < 50  # ~10 here; the old code needs ~2,000
    assert decoded_per_token(WholePrefixOutputText, 500) > 50  # the bound means something


def test_a_text_that_gets_shorter_still_releases_the_largest_prefix() -> None:
    """Prefix lengths 0,1,2,1,2 ("a", "a ", "a" once " <" deletes the space, "aa"): the largest
    prefix no longer than the limit is found even though the lengths are not sorted."""
    toks = [0, 1, 4, 0]  # "a", " ", "<", "a"
    new, old = OutputText(cleanup, ["bb"]), WholePrefixOutputText(cleanup, ["bb"])
    assert not new.check(toks) and not old.check(toks)
    assert new.releasable(toks) == old.releasable(toks) == 3


def test_a_window_that_decodes_to_nothing_is_not_trusted() -> None:
    """Tokens that decode to nothing (skipped specials) right before a word start: a window of
    only those would lose the word's leading space."""
    toks = [0] * 12 + [5] * 4 + [3]  # "▁a" x 12, "" x 4, "▁c"
    out = OutputText(sentencepiece, ["zz"])
    assert not out.check(toks)
    assert out.final(toks) == sentencepiece(toks) == "a" + " a" * 11 + " c"


@settings(max_examples=300, deadline=None)
@given(
    toks=st.lists(st.integers(0, len(BYTE_VOCAB) - 1), max_size=40),
    stops=st.sampled_from([[], ["zz"], ["€ a"]]),
    flush_every=st.integers(min_value=1, max_value=3),
)
def test_a_character_split_over_tokens_is_streamed_whole(
    toks: list[int], stops: list[str], flush_every: int
) -> None:
    """Byte-level tokens, flushed every 1-3 tokens: the streamed deltas add up to the final
    text, so a U+FFFD that a delta ended with (a character not complete yet) never reaches the
    caller in place of the character it became (invalid bytes stay U+FFFD in both)."""
    out = OutputText(byte_level, stops)
    got, sent, stopped = stream(out, toks, flush_every)
    final = out.final(toks[:sent] if stopped else toks)
    assert got == final


def test_split_euro_sign_waits_for_its_last_byte() -> None:
    toks = [0, 5]  # "a", then the first two bytes of "€" (e2 82)
    out = OutputText(byte_level, [])
    assert byte_level(toks) == "a\ufffd"
    assert out.releasable(toks) == 1  # "a" only: the rest is not a character yet
    toks.append(6)  # ac: "€" complete
    assert out.releasable(toks) == 3 and out.delta(toks, 1, 3) == "€"
    toks.append(2)  # c3: the start of another character
    assert out.releasable(toks, sent=3) == 3  # nothing new yet, never less than what was sent
    assert out.releasable([2, 2], sent=0) == 0  # invalid bytes wait for a whole character
