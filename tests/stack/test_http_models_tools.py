"""Served model names and tool requests on simulated engines, through the real stack (frontend
HTTP, scheduler, two sim engines serving different names), driven by the `openai` SDK.

What it checks: `/v1/models` lists the served names; `n > 1` is n calls of one program, merged
into one answer (streamed and not); an unknown model is a 404
`model_not_found`; each call reaches only an engine serving its model; the simulated engine
refuses constrained decoding and penalties (400 `unsupported_on_backend`) but answers
`tool_choice: auto` with text; contradictory tool requests are 400s that name the field.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import openai
import pytest
import pytest_asyncio
from svc_stack import Stack, stack_fixture

TOOL = {
    "type": "function",
    "function": {
        "name": "lookup",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
    },
}
ASK = [{"role": "user", "content": "find the answer"}]


stack = stack_fixture(
    http=True,
    engines={
        "alpha-e": ("--served-model-name", "alpha", "--served-model-name", "alpha-v1"),
        "beta-e": ("--served-model-name", "beta"),
    },
    await_engines=True,
)


@pytest_asyncio.fixture
async def oai(stack: Stack) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=f"{stack.http_url}/v1", api_key="unused", max_retries=0
    ) as c:
        yield c


async def test_models_list_served_names(oai: openai.AsyncOpenAI) -> None:
    cards = {m.id: m.model_extra["engines"] for m in (await oai.models.list()).data}
    assert cards == {"alpha": ["alpha-e"], "alpha-v1": ["alpha-e"], "beta": ["beta-e"]}
    with pytest.raises(openai.NotFoundError) as err:
        await oai.chat.completions.create(model="gamma", messages=ASK, max_tokens=2)
    assert err.value.code == "model_not_found" and "alpha" in err.value.message


async def test_calls_reach_only_engines_serving_their_model(oai: openai.AsyncOpenAI) -> None:
    for model, engine in (("alpha", "alpha-e"), ("alpha-v1", "alpha-e"), ("beta", "beta-e")):
        for _ in range(4):  # least-loaded alone would spread them over both engines
            r = await oai.chat.completions.create(model=model, messages=ASK, max_tokens=2)
            assert r.model_extra["autellix"]["engine_id"] == engine, model


@pytest.mark.parametrize(
    "extra",
    [
        {"response_format": {"type": "json_object"}},
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "object"}},
            }
        },
        {"tools": [TOOL], "tool_choice": "required"},
        {"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "lookup"}}},
        {"frequency_penalty": 0.5},
        {"extra_body": {"repetition_penalty": 1.1}},
    ],
)
async def test_sim_refuses_what_it_cannot_honour(oai: openai.AsyncOpenAI, extra: dict) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        await oai.chat.completions.create(model="beta", messages=ASK, max_tokens=4, **extra)
    assert err.value.code == "unsupported_on_backend"
    assert "simulated engine" in err.value.message


async def test_sim_streamed_refusal_is_an_error_event(stack: Stack) -> None:
    body = {
        "model": "beta",
        "messages": ASK,
        "stream": True,
        "response_format": {"type": "json_object"},
    }
    async with httpx.AsyncClient(base_url=stack.http_url, timeout=30) as h:
        r = await h.post("/v1/chat/completions", json=body)
    assert '"code":"unsupported_on_backend"' in r.text.replace(" ", "")


async def test_tools_left_to_the_model_and_tool_history(oai: openai.AsyncOpenAI) -> None:
    r = await oai.chat.completions.create(
        model="alpha", messages=ASK, tools=[TOOL], max_tokens=5, seed=1
    )
    assert r.choices[0].message.tool_calls is None and r.choices[0].message.content
    assert r.choices[0].finish_reason == "length"
    history = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "forty two"},
    ]
    again = await oai.chat.completions.create(
        model="alpha", messages=history, tools=[TOOL], max_tokens=5, seed=1
    )
    # the tool turns are in the prompt (the sim renders them as text, ~4 characters a token)
    assert again.usage.prompt_tokens > r.usage.prompt_tokens
    # seed is honoured by the simulated model: the same request gives the same tokens
    same = await oai.chat.completions.create(
        model="alpha", messages=ASK, tools=[TOOL], max_tokens=5, seed=1
    )
    assert same.model_extra["autellix"]["token_ids"] == r.model_extra["autellix"]["token_ids"]


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        (
            {"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "x"}}},
            "tool_choice",
        ),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [{"type": "retrieval"}]}, "tools.0"),
        ({"response_format": {"type": "yaml"}}, "response_format"),
        (
            {
                "tools": [TOOL],
                "tool_choice": "required",
                "response_format": {"type": "json_object"},
            },
            "response_format",
        ),
    ],
)
async def test_bad_tool_requests_are_400s(oai: openai.AsyncOpenAI, extra: dict, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        await oai.chat.completions.create(model="alpha", messages=ASK, max_tokens=2, **extra)
    assert err.value.param == param


async def test_n_choices_are_calls_of_one_program(oai: openai.AsyncOpenAI) -> None:
    r = await oai.chat.completions.create(
        model="alpha", messages=ASK, n=3, max_tokens=4, seed=5, extra_body={"program_id": "n-3"}
    )
    assert [c.index for c in r.choices] == [0, 1, 2]
    infos = r.model_extra["autellix_choices"]
    assert {i["program_id"] for i in infos} == {"n-3"} and len({i["call_id"] for i in infos}) == 3
    # seed + i per choice: different samples, and the same again for the same request
    tokens = [tuple(i["token_ids"]) for i in infos]
    assert len(set(tokens)) == 3
    assert r.usage.completion_tokens == 12 and r.usage.total_tokens == r.usage.prompt_tokens + 12
    again = await oai.chat.completions.create(
        model="alpha", messages=ASK, n=3, max_tokens=4, seed=5
    )
    assert [tuple(i["token_ids"]) for i in again.model_extra["autellix_choices"]] == tokens


async def test_n_choices_streamed(oai: openai.AsyncOpenAI) -> None:
    stream = await oai.chat.completions.create(
        model="alpha",
        messages=ASK,
        n=2,
        max_tokens=3,
        stream=True,
        stream_options={"include_usage": True},
    )
    text: dict[int, str] = {0: "", 1: ""}
    finished: list[int] = []
    usage = None
    async for chunk in stream:
        for c in chunk.choices:
            text[c.index] += c.delta.content or ""
            if c.finish_reason:
                finished.append(c.index)
        usage = chunk.usage or usage
    assert sorted(finished) == [0, 1] and all(text.values())
    assert usage is not None and usage.completion_tokens == 6
