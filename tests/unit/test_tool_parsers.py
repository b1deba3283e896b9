"""Tool-call parsers (`services/frontend/tool_parsers`): the Hermes and Llama-3 forms, the forced
(constrained) readers, and the request mapping; streamed in arbitrary pieces they read the same
calls and content as in one piece."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autellix.services.frontend.tool_parsers import (
    HermesParser,
    Llama3JsonParser,
    NamedParser,
    RequiredParser,
    StreamParser,
    collect,
    default_parser,
    extract,
)
from autellix.services.frontend.tool_parsers.request import BadToolRequest, tool_fields

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def _calls(parser: StreamParser, text: str) -> tuple[str | None, list[tuple[str, dict]]]:
    got = extract(parser, text)
    return got.content, [(c.name, json.loads(c.arguments)) for c in got.calls]


def test_hermes_reads_calls_and_content() -> None:
    text = (
        'let me look <tool_call>{"name": "get_weather", "arguments": {"city": "paris"}}'
        '</tool_call>\n<tool_call>{"name": "get_time", "arguments": {}}</tool_call>'
    )
    content, calls = _calls(HermesParser(), text)
    assert content == "let me look"
    assert calls == [("get_weather", {"city": "paris"}), ("get_time", {})]


def test_hermes_unterminated_last_call_and_non_calls() -> None:
    _, calls = _calls(HermesParser(), '<tool_call>{"name": "f", "arguments": {"x": 1}}')
    assert calls == [("f", {"x": 1})]
    content, calls = _calls(HermesParser(), "<tool_call>not json</tool_call> ok")
    assert calls == [] and content == "<tool_call>not json</tool_call> ok"
    assert _calls(HermesParser(), "plain answer") == ("plain answer", [])


def test_llama3_json_reads_objects_and_python_tag() -> None:
    text = '<|python_tag|>{"name": "a", "parameters": {"q": "x"}}; {"name": "b", "parameters": {}}'
    assert _calls(Llama3JsonParser(), text) == (None, [("a", {"q": "x"}), ("b", {})])
    assert _calls(Llama3JsonParser(), "  the answer is 4") == ("the answer is 4", [])
    content, calls = _calls(Llama3JsonParser(), '{"name": "a", "parameters": {}} and more')
    assert calls == [("a", {})] and content == "and more"
    assert _calls(Llama3JsonParser(), '{"not": "a call"}') == ('{"not": "a call"}', [])


def test_forced_readers() -> None:
    assert _calls(NamedParser("f"), '{"city": "rome"}') == (None, [("f", {"city": "rome"})])
    text = '[{"name": "f", "parameters": {"a": 1}}, {"name": "g", "parameters": {}}]'
    assert _calls(RequiredParser(), text) == (None, [("f", {"a": 1}), ("g", {})])
    # cut short by max_tokens: the complete calls, and the rest as content
    content, calls = _calls(RequiredParser(), '[{"name": "f", "parameters": {}}, {"name": "g"')
    assert calls == [("f", {})] and content == '{"name": "g"'


def test_streamed_named_call_starts_with_the_name() -> None:
    parser = NamedParser("f")
    first = parser.feed('{"ci')
    assert first[0].index == 0 and first[0].name == "f" and first[0].arguments == '{"ci'
    rest = parser.feed('ty": "x"}')
    assert rest[0].name is None and rest[0].arguments == 'ty": "x"}'


_TEXTS = [
    'hello <tool_call>{"name": "get_weather", "arguments": {"city": "paris"}}</tool_call> bye',
    '<tool_call>{"name": "a", "arguments": {}}</tool_call><tool_call>{"name": "b", "arguments":'
    ' {"n": [1, 2]}}</tool_call>',
    "no tools at all < not a tag",
    '<tool_call>{"name": "x", "arguments": {"s": "</tool"}}',
]
_LLAMA_TEXTS = [
    '{"name": "a", "parameters": {"q": "}{"}}; {"name": "b", "parameters": {}}',
    "<|python_tag|>" + '{"name": "a", "parameters": {}}',
    "plain {text}",
]


def _pieces(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts})
    bounds = [0, *points, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


@pytest.mark.parametrize(
    ("make", "texts"),
    [
        (HermesParser, _TEXTS),
        (Llama3JsonParser, _LLAMA_TEXTS),
        (
            RequiredParser,
            ['[{"name": "f", "parameters": {"a": "]"}}, {"name": "g", "parameters": {}}]'],
        ),
        (lambda: NamedParser("f"), ['{"city": "<tool_call>"}']),
    ],
)
@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12))
def test_any_chunking_reads_the_same_answer(make, texts: list[str], cuts: list[int]) -> None:  # type: ignore[no-untyped-def]
    for text in texts:
        whole = extract(make(), text)
        parser = make()
        events = []
        for piece in _pieces(text, cuts):
            events += parser.feed(piece)
        events += parser.finish()
        streamed = collect(events)
        assert streamed.content == whole.content
        assert [(c.name, c.arguments) for c in streamed.calls] == [
            (c.name, c.arguments) for c in whole.calls
        ]


def test_request_mapping() -> None:
    named = tool_fields(
        [WEATHER],
        {"type": "function", "function": {"name": "get_weather"}},
        None,
        None,
        model="m",
        parser=None,
    )
    assert named.plan.mode == "named" and named.structured == {
        "json_schema": WEATHER["function"]["parameters"]
    }
    required = tool_fields([WEATHER], "required", False, None, model="m", parser=None)
    schema = required.structured["json_schema"]  # type: ignore[index]
    assert schema["type"] == "array" and schema["maxItems"] == 1
    assert schema["items"]["anyOf"][0]["properties"]["name"]["enum"] == ["get_weather"]
    auto = tool_fields([WEATHER], None, None, None, model="meta-llama/Llama-3.1-8B", parser=None)
    assert (
        auto.plan.mode == "auto" and auto.plan.parser == "llama3_json" and auto.structured is None
    )
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    assert tool_fields(None, None, None, fmt, model="m", parser=None).structured == {
        "json_schema": {"type": "object"}
    }
    with pytest.raises(BadToolRequest, match="not in tools"):
        tool_fields([WEATHER], {"type": "function", "function": {"name": "nope"}}, None, None,
                    model="m", parser=None)  # fmt: skip
    with pytest.raises(BadToolRequest):
        tool_fields([WEATHER], "required", None, {"type": "json_object"}, model="m", parser=None)
    assert default_parser("Qwen/Qwen2.5-7B-Instruct") == "hermes"
