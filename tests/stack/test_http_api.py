"""The OpenAI-compatible HTTP API against the real stack: a frontend process serving HTTP, a
scheduler and a simulated engine, driven by the official `openai` package (sync and async,
streaming and not), by LangChain's ChatOpenAI, and by raw HTTP for the error cases."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import openai
import pytest
import pytest_asyncio
from svc_stack import Stack, db_fetch, stack_fixture

from autellix.runtime.settings import Settings

MODEL = "simulated"  # what the sim engine reports as its model


stack = stack_fixture(
    http=True,
    engines={"http-e1": ("--max-batch", "4", "--token-latency", "0.002")},
    await_engines=True,
)


@pytest.fixture
def base_url(stack: Stack) -> str:
    return f"{stack.http_url}/v1"


@pytest.fixture
def sync_client(base_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0) as c:
        yield c


@pytest_asyncio.fixture
async def async_client(base_url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0) as c:
        yield c


def _pid() -> str:
    return f"http-{uuid.uuid4().hex[:10]}"


# --------------------------------------------------------------------------- openai, sync


def test_sync_chat_completion(sync_client: openai.OpenAI) -> None:
    r = sync_client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        max_tokens=7,
    )
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-c-")
    assert r.model == MODEL
    (choice,) = r.choices
    assert choice.message.role == "assistant" and choice.finish_reason == "length"
    # the simulated engine renders each token as one pseudo-word
    assert len(choice.message.content.split()) == 7
    assert r.usage.completion_tokens == 7 and r.usage.prompt_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + 7
    extra = r.model_extra["autellix"]
    assert extra["backend"] == "sim" and extra["engine_id"] == "http-e1"
    assert len(extra["token_ids"]) == 7 and extra["text_is_placeholder"] is False


def test_sync_stream_matches_non_streamed(sync_client: openai.OpenAI) -> None:
    kwargs = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "tell me a story about the sea"}],
        "max_tokens": 40,
        "seed": 7,
    }
    whole = sync_client.chat.completions.create(**kwargs)  # type: ignore[call-overload]
    chunks = list(
        sync_client.chat.completions.create(
            **kwargs, stream=True, stream_options={"include_usage": True}
        )
    )
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content  # deterministic simulated model
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length" and not any(finishes[:-1])
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None and usage.completion_tokens == 40


def test_sync_completions_with_token_ids_and_text(sync_client: openai.OpenAI) -> None:
    r = sync_client.completions.create(model=MODEL, prompt=[5, 6, 7, 8], max_tokens=3)
    assert r.object == "text_completion" and r.usage.prompt_tokens == 4
    assert r.usage.completion_tokens == 3 and len(r.choices[0].text.split()) == 3
    default = sync_client.completions.create(model=MODEL, prompt="Once upon a time")
    assert default.usage.completion_tokens == 16  # OpenAI's default max_tokens
    stream = sync_client.completions.create(
        model=MODEL, prompt="Once upon a time", max_tokens=16, stream=True
    )
    assert "".join(c.choices[0].text for c in stream if c.choices) == default.choices[0].text


def test_models_and_health(sync_client: openai.OpenAI, stack: Stack) -> None:
    models = sync_client.models.list()
    ids = [m.id for m in models.data]
    assert ids == [MODEL]
    assert models.data[0].model_extra["engines"] == ["http-e1"]
    assert sync_client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError):
        sync_client.models.retrieve("no-such-model")
    h = httpx.get(f"{stack.http_url}/health").json()
    assert h == {"status": "ok", "nats": "connected", "engines": 1, "models": [MODEL]}


# --------------------------------------------------------------------------- openai, async


async def test_async_program_with_threads_and_parents(
    async_client: openai.AsyncOpenAI, module_settings: Settings
) -> None:
    pid = _pid()
    root = await async_client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "plan"}],
        max_tokens=5,
        extra_headers={"X-Autellix-Program-Id": pid},
    )
    root_id = root.model_extra["autellix"]["call_id"]

    async def branch(i: int) -> str:
        stream = await async_client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": f"branch {i}"}],
            max_tokens=6,
            stream=True,
            extra_body={"program_id": pid, "thread_id": f"b{i}", "parent_ids": [root_id]},
        )
        parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        return "".join(parts)

    texts = await asyncio.gather(*(branch(i) for i in range(3)))
    assert all(len(t.split()) == 6 for t in texts)
    done = await async_client.completions.create(
        model=MODEL,
        prompt="join",
        max_tokens=2,
        extra_headers={"X-Autellix-Program-Id": pid, "X-Autellix-Thread-Id": "main"},
    )
    assert done.model_extra["autellix"]["program_id"] == pid
    rows = await db_fetch(
        module_settings.database_url,
        "SELECT thread_id, parent_ids FROM calls WHERE program_id = $1 ORDER BY accepted_at",
        pid,
    )
    assert len(rows) == 5
    assert sorted(r["thread_id"] for r in rows) == ["b0", "b1", "b2", "main", "main"]
    assert [list(r["parent_ids"]) for r in rows if r["thread_id"].startswith("b")] == [
        [root_id]
    ] * 3
    async with httpx.AsyncClient() as h:
        closed = (await h.post(f"{async_client.base_url}programs/{pid}/close")).json()
    assert closed["status"] == "closed" and closed["stats"]["calls"] == 5
    assert closed["stats"]["completion_tokens"] == 5 + 3 * 6 + 2
    with pytest.raises(openai.BadRequestError) as err:
        await async_client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "too late"}],
            extra_headers={"X-Autellix-Program-Id": pid},
        )
    assert err.value.code == "program_closed"


async def test_async_stream_completions_and_one_call_program(
    async_client: openai.AsyncOpenAI, module_settings: Settings
) -> None:
    stream = await async_client.completions.create(
        model=MODEL, prompt="count", max_tokens=30, stream=True
    )
    chunks = [c async for c in stream]
    last = chunks[-1]
    assert last.choices[0].finish_reason == "length"
    info = last.model_extra["autellix"]
    assert info["program_id"].startswith("p-") and len(info["token_ids"]) == 30
    for _ in range(50):  # a call without a program id is a program of its own, closed after
        rows = await db_fetch(
            module_settings.database_url,
            "SELECT status, calls_total FROM programs WHERE id = $1",
            info["program_id"],
        )
        if rows and rows[0]["status"] == "closed":
            break
        await asyncio.sleep(0.1)
    assert rows[0]["status"] == "closed" and rows[0]["calls_total"] == 1


async def test_idempotency_key_never_runs_twice(async_client: openai.AsyncOpenAI) -> None:
    key = f"k-{uuid.uuid4().hex}"
    kwargs = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "once"}],
        "max_tokens": 4,
        "extra_headers": {"Idempotency-Key": key, "X-Autellix-Program-Id": _pid()},
    }
    first = await async_client.chat.completions.create(**kwargs)  # type: ignore[call-overload]
    again = await async_client.chat.completions.create(**kwargs)  # type: ignore[call-overload]
    a, b = first.model_extra["autellix"], again.model_extra["autellix"]
    assert a["call_id"] == b["call_id"] and b["duplicate"] is True and a["duplicate"] is False
    assert a["token_ids"] == b["token_ids"]


def test_langchain_chat_openai(base_url: str) -> None:
    lc = pytest.importorskip("langchain_openai")
    llm = lc.ChatOpenAI(
        model=MODEL,
        base_url=base_url,
        api_key="unused",
        max_tokens=5,
        max_retries=0,
        default_headers={"X-Autellix-Program-Id": _pid()},
    )
    msg = llm.invoke("What is the capital of France?")
    assert len(msg.content.split()) == 5
    assert msg.usage_metadata["output_tokens"] == 5
    streamed = "".join(chunk.content for chunk in llm.stream("And of Spain?"))
    assert len(streamed.split()) == 5


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"model": MODEL}, 400, "messages"),
        ({"model": MODEL, "messages": []}, 400, "messages"),
        ({"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]}, 400, "role"),
        (
            {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "logprobs": True},
            400,
            "logprobs",
        ),
        (  # the simulated engine has no distribution to take logprobs from
            {
                "model": MODEL,
                "messages": [{"role": "user", "content": "x"}],
                "logprobs": True,
                "top_logprobs": 2,
            },
            400,
            "cannot honour logprobs",
        ),
        (
            {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "top_logprobs": 2},
            400,
            "top_logprobs",
        ),
        (
            {
                "model": MODEL,
                "messages": [{"role": "user", "content": "x"}],
                "logprobs": True,
                "top_logprobs": 21,
            },
            400,
            "top_logprobs",
        ),
        (
            {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "temperature": 5},
            400,
            "temperature",
        ),
        (
            {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
            400,
            "max_tokens",
        ),
        (
            {
                "model": MODEL,
                "messages": [{"role": "user", "content": "x"}],
                "tools": [{"type": "function", "function": {"name": "f"}}],
                "tool_choice": {"type": "function", "function": {"name": "g"}},
            },
            400,
            "not in tools",
        ),
        (
            {
                "model": MODEL,
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
                ],
            },
            400,
            "image_url",
        ),
        (
            {
                "model": MODEL,
                "messages": [{"role": "user", "content": "x"}],
                "program_id": "bad id!",
            },
            400,
            "program_id",
        ),
    ],
)
def test_bad_chat_requests_get_clear_400s(
    stack: Stack, body: dict, status: int, needle: str
) -> None:
    r = httpx.post(f"{stack.http_url}/v1/chat/completions", json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and needle in err["message"], err


def test_bad_http_requests(stack: Stack) -> None:
    url: str = stack.http_url
    r = httpx.post(
        f"{url}/v1/chat/completions",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]
    r = httpx.post(f"{url}/v1/completions", json={"model": MODEL, "prompt": ["a", "b"]})
    assert r.status_code == 400 and "one prompt per request" in r.json()["error"]["message"]
    r = httpx.post(
        f"{url}/v1/completions",
        json={"model": MODEL, "prompt": "x", "program_id": "p1"},
        headers={"X-Autellix-Program-Id": "p2"},
    )
    assert r.status_code == 400 and "program_id" in r.json()["error"]["message"]
    r = httpx.get(f"{url}/v1/nothing")
    assert r.status_code == 404 and "no such endpoint" in r.json()["error"]["message"]
    big = {"model": MODEL, "prompt": "x" * (5 * 1024 * 1024)}
    r = httpx.post(f"{url}/v1/completions", content=json.dumps(big).encode())
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    r = httpx.post(f"{url}/v1/programs/unknown-{uuid.uuid4().hex[:6]}/close")
    assert r.status_code == 404 and r.json()["error"]["code"] == "program_not_found"


def test_openapi_served_matches_committed(stack: Stack) -> None:
    from pathlib import Path

    committed = json.loads((Path(__file__).parents[2] / "docs" / "openapi.json").read_text())
    served = httpx.get(f"{stack.http_url}/openapi.json").json()
    assert served == committed
