"""Tool calling and structured output through the whole stack on the real vLLM engine (tiny
dummy-weight Llama, offline tokenizer whose chat template takes tools), driven by the official
`openai` SDK and LangChain: frontend (HTTP) → scheduler → engine (`--backend vllm`).

Why a dummy-weight model can show this: `tool_choice` naming a function, `required` and
`response_format` are enforced by vLLM's constrained decoding, so whatever the weights say the
answer is JSON valid against the schema (the schemas bound their strings and numbers so that a
model with no opinion still closes them). A simulated engine serving another model name shows
routing by model and the `unsupported_on_backend` refusal. One engine stack for the module.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import httpx
import jsonschema
import pytest
import pytest_asyncio
from svc_stack import Stack

from autellix.backends.tinymodel import SPECIAL_TOKENS
from autellix.runtime.settings import Settings

pytestmark = pytest.mark.vllm

VLLM_MODEL = "tiny-agent"
SIM_MODEL = "sim-agent"
WEATHER_PARAMS = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 10},
        "unit": {"enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "the weather in a city",
        "parameters": WEATHER_PARAMS,
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "integer", "minimum": -12, "maximum": 12}},
            "required": ["zone"],
            "additionalProperties": False,
        },
    },
}
SCHEMAS = {"get_weather": WEATHER_PARAMS, "get_time": TIME["function"]["parameters"]}
ASK = [{"role": "user", "content": "what is the weather in paris"}]


@pytest_asyncio.fixture(scope="module")
async def stack(
    module_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    pytest.importorskip("vllm")
    root = tmp_path_factory.mktemp("vllm-tools")
    (root / "tmp").mkdir()
    s = Stack(module_settings, root / "logs")
    s.start_frontend(http=True)
    s.start("scheduler", "scheduler")
    s.start(
        "vllm-tools",
        "engine",
        "--engine-id", "vllm-tools",
        "--backend", "vllm",
        "--model", "dummy:tiny",
        "--served-model-name", VLLM_MODEL,
        "--max-batch", "2",
        "--max-model-len", "2048",
        "--opt", "kv_cache_gib=0.0625",
        "--opt", "dummy_tokenizer=true",
        "--opt", f"model_dir={root / 'models'}",
        stop_timeout=60.0,
        env={"TMPDIR": str(root / "tmp")},
    )  # fmt: skip
    s.start_engine("sim-tools", "--served-model-name", SIM_MODEL)
    try:
        await s.wait_ready(wait_s=300.0)
        yield s
    finally:
        await s.stop()


@pytest_asyncio.fixture(scope="module")
async def oai(stack: Stack) -> AsyncIterator[Any]:
    openai = pytest.importorskip("openai")
    # the first constrained request compiles the tokenizer's grammar tables (a minute or more
    # on a busy 2-core CPU)
    async with openai.AsyncOpenAI(
        base_url=f"{stack.http_url}/v1", api_key="unused", timeout=400.0, max_retries=0
    ) as client:
        yield client


def _valid_call(name: str, arguments: str) -> dict[str, Any]:
    args = json.loads(arguments)
    jsonschema.validate(args, SCHEMAS[name])
    return args


async def test_models_are_listed_by_served_name_and_unknown_ones_are_404(
    stack: Stack, oai: Any
) -> None:
    import openai

    listed = {m.id for m in (await oai.models.list()).data}
    assert listed == {VLLM_MODEL, SIM_MODEL}
    with pytest.raises(openai.NotFoundError) as err:
        await oai.chat.completions.create(model="no-such-model", messages=ASK, max_tokens=2)
    assert err.value.code == "model_not_found"


async def test_forced_tool_call_is_valid_json_for_the_schema(oai: Any) -> None:
    r = await oai.chat.completions.create(
        model=VLLM_MODEL,
        messages=ASK,
        tools=[WEATHER, TIME],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=64,
        temperature=0.0,
    )
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    _valid_call("get_weather", call.function.arguments)
    assert r.model == VLLM_MODEL and r.model_extra["autellix"]["backend"] == "vllm"


async def test_forced_tool_call_streamed(oai: Any) -> None:
    stream = await oai.chat.completions.create(
        model=VLLM_MODEL,
        messages=ASK,
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=64,
        temperature=0.0,
        stream=True,
    )
    calls: dict[int, dict[str, str]] = {}
    reasons = []
    async for chunk in stream:
        for choice in chunk.choices:
            if choice.finish_reason:
                reasons.append(choice.finish_reason)
            for d in choice.delta.tool_calls or []:
                got = calls.setdefault(d.index, {"id": "", "name": "", "arguments": ""})
                got["id"] += d.id or ""
                got["name"] += (d.function.name or "") if d.function else ""
                got["arguments"] += (d.function.arguments or "") if d.function else ""
    assert reasons == ["tool_calls"]
    assert list(calls) == [0] and calls[0]["name"] == "get_weather" and calls[0]["id"]
    _valid_call("get_weather", calls[0]["arguments"])


async def test_required_tool_choice_one_call_of_the_tools(oai: Any) -> None:
    r = await oai.chat.completions.create(
        model=VLLM_MODEL,
        messages=ASK,
        tools=[WEATHER, TIME],
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=96,
        temperature=0.0,
    )
    (call,) = r.choices[0].message.tool_calls
    _valid_call(call.function.name, call.function.arguments)


async def test_response_format_json_schema(oai: Any) -> None:
    schema = {
        "type": "object",
        "properties": {
            "answer": {"type": "string", "maxLength": 8},
            "confident": {"type": "boolean"},
        },
        "required": ["answer", "confident"],
        "additionalProperties": False,
    }
    r = await oai.chat.completions.create(
        model=VLLM_MODEL,
        messages=ASK,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "reply", "schema": schema, "strict": True},
        },
        max_tokens=64,
        temperature=0.0,
    )
    assert r.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(r.choices[0].message.content), schema)


async def test_multi_turn_with_tool_results_reaches_the_template(oai: Any) -> None:
    """An assistant turn with tool_calls and the tool's result are part of the prompt the
    chat template renders (the prompt grows by their tokens), and the next call still works."""
    forced = {"type": "function", "function": {"name": "get_weather"}}
    first = await oai.chat.completions.create(
        model=VLLM_MODEL, messages=ASK, tools=[WEATHER], tool_choice=forced, max_tokens=64,
        temperature=0.0,
    )  # fmt: skip
    call = first.choices[0].message.tool_calls[0]
    history = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.function.name, "arguments": call.function.arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": "sunny and warm"},
    ]
    second = await oai.chat.completions.create(
        model=VLLM_MODEL, messages=history, tools=[WEATHER], tool_choice=forced, max_tokens=64,
        temperature=0.0,
    )  # fmt: skip
    assert second.usage.prompt_tokens > first.usage.prompt_tokens + 10
    _valid_call("get_weather", second.choices[0].message.tool_calls[0].function.arguments)
    # tool_choice none: the tools stay in the prompt, the answer is text
    text = await oai.chat.completions.create(
        model=VLLM_MODEL, messages=history, tools=[WEATHER], tool_choice="none", max_tokens=4,
        temperature=0.0,
    )  # fmt: skip
    assert text.choices[0].message.tool_calls is None
    assert text.choices[0].finish_reason in ("stop", "length")


async def test_sampling_fields_pass_to_vllm(oai: Any) -> None:
    kw: dict[str, Any] = {
        "model": VLLM_MODEL,
        "messages": ASK,
        "max_tokens": 8,
        "temperature": 1.0,
        "seed": 7,
        "presence_penalty": 0.5,
        "frequency_penalty": 0.5,
        "extra_body": {"repetition_penalty": 1.2},
    }
    a = await oai.chat.completions.create(**kw)
    b = await oai.chat.completions.create(**kw)
    assert a.model_extra["autellix"]["token_ids"] == b.model_extra["autellix"]["token_ids"]


async def test_langchain_bind_tools_runs_a_tool_step(stack: Stack) -> None:
    lc_openai = pytest.importorskip("langchain_openai")
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import tool

    @tool
    def get_weather(city: str, unit: str) -> str:
        """The weather in a city."""
        return f"sunny in {city} ({unit})"

    llm = lc_openai.ChatOpenAI(
        model=VLLM_MODEL,
        base_url=f"{stack.http_url}/v1",
        api_key="unused",
        max_tokens=64,
        temperature=0.0,
        timeout=400,
        max_retries=0,
    )
    bound = llm.bind_tools([WEATHER], tool_choice="get_weather")
    messages: list[Any] = [HumanMessage("what is the weather in paris")]
    ai = await bound.ainvoke(messages)
    (call,) = ai.tool_calls
    assert call["name"] == "get_weather"
    jsonschema.validate(call["args"], WEATHER_PARAMS)
    result = get_weather.invoke(call["args"])
    messages += [ai, ToolMessage(result, tool_call_id=call["id"])]
    after = await llm.bind(max_tokens=4).ainvoke(messages)
    assert isinstance(after.content, str)


async def test_sim_engine_refuses_what_it_cannot_do(stack: Stack, oai: Any) -> None:
    import openai

    for extra in (
        {"response_format": {"type": "json_object"}},
        {"tools": [WEATHER], "tool_choice": "required"},
        {"presence_penalty": 1.0},
        {"logprobs": True, "top_logprobs": 2},
    ):
        with pytest.raises(openai.BadRequestError) as err:
            await oai.chat.completions.create(model=SIM_MODEL, messages=ASK, max_tokens=4, **extra)
        assert err.value.code == "unsupported_on_backend", extra
        assert "simulated engine" in err.value.message
    # tools left to the model (auto) are fine: the simulated model answers text
    r = await oai.chat.completions.create(
        model=SIM_MODEL, messages=ASK, tools=[WEATHER], max_tokens=4, seed=3
    )
    assert r.choices[0].finish_reason == "length" and r.model_extra["autellix"]["backend"] == "sim"


SPECIAL = set(SPECIAL_TOKENS)


def _check_entries(entries: list[Any], top: int, text: str) -> None:
    """Finite logprobs <= 0, `top` candidates each (most likely first), bytes that are the
    token's UTF-8, and tokens that join to the answer's text (special tokens, sampled but not
    in the text, left out)."""
    assert entries
    for e in entries:
        assert math.isfinite(e.logprob) and e.logprob <= 0.0
        assert e.bytes == list(e.token.encode())
        assert len(e.top_logprobs) == top
        lps = [t.logprob for t in e.top_logprobs]
        assert all(math.isfinite(x) and x <= 0.0 for x in lps)
        assert lps == sorted(lps, reverse=True)
        if top:  # the sampled token is at most as likely as the most likely one
            assert e.logprob <= lps[0] + 1e-4
    assert "".join(e.token for e in entries if e.token not in SPECIAL) == text


async def test_chat_logprobs(oai: Any) -> None:
    got = await oai.chat.completions.create(
        model=VLLM_MODEL, messages=ASK, max_tokens=12, logprobs=True, top_logprobs=3
    )
    choice = got.choices[0]
    assert len(choice.logprobs.content) == got.usage.completion_tokens
    _check_entries(choice.logprobs.content, 3, choice.message.content)
    # logprobs alone: the sampled token's, no candidates
    plain = await oai.chat.completions.create(
        model=VLLM_MODEL, messages=ASK, max_tokens=4, logprobs=True
    )
    _check_entries(plain.choices[0].logprobs.content, 0, plain.choices[0].message.content)
    none = await oai.chat.completions.create(model=VLLM_MODEL, messages=ASK, max_tokens=4)
    assert none.choices[0].logprobs is None


async def test_chat_logprobs_streamed(oai: Any) -> None:
    stream = await oai.chat.completions.create(
        model=VLLM_MODEL,
        messages=ASK,
        max_tokens=12,
        logprobs=True,
        top_logprobs=2,
        stream=True,
        stream_options={"include_usage": True},
    )
    entries, text, usage = [], "", None
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            text += c.delta.content or ""
            if c.logprobs is not None and c.logprobs.content:
                entries.extend(c.logprobs.content)
    assert usage is not None and len(entries) == usage.completion_tokens
    _check_entries(entries, 2, text)


async def test_completion_logprobs_streamed_and_not(oai: Any) -> None:
    got = await oai.completions.create(
        model=VLLM_MODEL, prompt="hello world the", max_tokens=10, logprobs=2
    )
    lp = got.choices[0].logprobs
    n = got.usage.completion_tokens
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == n
    assert all(math.isfinite(x) and x <= 0.0 for x in lp.token_logprobs)
    assert all(len(t) <= 2 and all(v <= 0.0 for v in t.values()) for t in lp.top_logprobs)
    text = got.choices[0].text
    assert "".join(t for t in lp.tokens if t not in SPECIAL) == text
    at = 0
    for tok, off in zip(lp.tokens, lp.text_offset, strict=True):
        assert off == at
        at += len(tok)
    stream = await oai.completions.create(
        model=VLLM_MODEL, prompt="hello world the", max_tokens=10, logprobs=1, stream=True
    )
    tokens, offsets, streamed = [], [], ""
    async for chunk in stream:
        for c in chunk.choices:
            streamed += c.text
            if c.logprobs is not None:
                tokens += c.logprobs.tokens
                offsets += c.logprobs.text_offset
    assert tokens and "".join(t for t in tokens if t not in SPECIAL) == streamed
    assert offsets == [sum(len(t) for t in tokens[:i]) for i in range(len(tokens))]


async def test_python_client_logprobs(stack: Stack) -> None:
    from autellix.client import CallResult, Client
    from autellix.wire.protocol import TokenDelta

    async with Client(
        stack.settings.nats_url, namespace=stack.settings.namespace, timeout=120
    ) as client:
        async with client.program("logprobs") as p:
            whole = await p.call("hello world", max_tokens=8, model=VLLM_MODEL, logprobs=2)
            assert whole.logprobs is not None and len(whole.logprobs) == len(whole.token_ids)
            assert [e.token_id for e in whole.logprobs] == whole.token_ids
            _check_entries(whole.logprobs, 2, whole.text or "")
            last = None
            async for item in p.stream(
                "hello world", max_tokens=8, model=VLLM_MODEL, sampling={"logprobs": 1}
            ):
                if isinstance(item, TokenDelta):
                    assert item.logprobs is not None
                    assert len(item.logprobs) == len(item.token_ids)
                last = item
            assert isinstance(last, CallResult) and last.logprobs is not None
            assert [e.token_id for e in last.logprobs] == last.token_ids


def test_logs_clean(stack: Stack, tmp_path: Path) -> None:
    """No crashed segment on the engines (a refusal is a typed error, not an engine error)."""
    for name in ("vllm-tools", "sim-tools"):
        assert "call segment crashed" not in stack.logs(name)
    assert httpx.get(f"{stack.http_url}/health").json()["engines"] == 2


async def test_openai_agents_sdk_runs_a_tool(stack: Stack) -> None:
    """The OpenAI Agents SDK's chat-completions model: a forced tool call, the tool runs, and
    its result ends the run (`stop_on_first_tool`)."""
    agents = pytest.importorskip("agents")
    import openai

    ran: list[dict[str, str]] = []

    @agents.function_tool
    def get_weather(city: Literal["paris", "rome"], unit: Literal["c", "f"]) -> str:
        """The weather in a city (enums: a dummy-weight model never closes a free string)."""
        ran.append({"city": city, "unit": unit})
        return f"sunny in {city}"

    agents.set_tracing_disabled(True)
    client = openai.AsyncOpenAI(
        base_url=f"{stack.http_url}/v1", api_key="unused", timeout=400.0, max_retries=0
    )
    agent = agents.Agent(
        name="weather",
        instructions="answer with the weather",
        tools=[get_weather],
        model=agents.OpenAIChatCompletionsModel(model=VLLM_MODEL, openai_client=client),
        model_settings=agents.ModelSettings(
            tool_choice="get_weather", max_tokens=64, temperature=0.0
        ),
        tool_use_behavior="stop_on_first_tool",
    )
    result = await agents.Runner.run(agent, "what is the weather in paris", max_turns=2)
    assert len(ran) == 1 and result.final_output == f"sunny in {ran[0]['city']}"
    await client.close()
