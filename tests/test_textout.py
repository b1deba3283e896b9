"""Output text of a call: prefix-stable deltas and stop strings (services/engine/textout.py)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from autellix.services.engine.textout import OutputText

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
