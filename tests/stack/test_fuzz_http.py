"""Schemathesis against the live HTTP API: every operation in docs/openapi.json, with bodies,
paths and queries both valid (positive) and invalid (negative) by the schema, sent to a real
frontend in front of a real scheduler and sim engine.

Checks on every response: no 5xx, the status code is one the operation documents, and the body
conforms to the documented schema and content type. Valid calls keep `max_tokens` small (they
run on the engine). CI runs a few hundred cases; `AUTELLIX_FUZZ_CASES` raises it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import requests
import schemathesis
from hypothesis import given, seed
from schemathesis import Case, GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from svc_stack import Stack

from autellix.bench.chaos_strategies import fuzz_settings

OPENAPI = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
CASES = int(os.environ.get("AUTELLIX_FUZZ_CASES", "360"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
#: valid completions run on the sim engine: keep them short, and few (`n` choices are n calls)
MAX_TOKENS_CAP = 8
MAX_CHOICES_CAP = 4

SCHEMA = schemathesis.openapi.from_path(OPENAPI)
OPERATIONS = [op.ok() for op in SCHEMA.get_all_operations()]
#: (operation, mode): negative cases only where the schema leaves something to get wrong, a
#: body (the path parameters are unconstrained strings: no value of them is invalid)
RUNS = [
    (op, mode)
    for op in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode == GenerationMode.POSITIVE or len(op.body)
]


@pytest_asyncio.fixture(scope="module")
async def stack(new_stack: Callable[[], Stack]) -> AsyncIterator[Stack]:
    s = new_stack()
    # a call the engines cannot take is answered within seconds, never by the 600 s HTTP timeout
    s.start_frontend("--http-call-timeout", "30", http=True)
    s.start("scheduler", "scheduler", "--no-engine-timeout", "4")
    s.start_engine("fuzz-http-e1", "--max-model-len", "2048")
    async with s.running():
        async with httpx.AsyncClient(base_url=s.http_url) as h:
            for _ in range(100):  # the engine's heartbeat reached the frontend
                if (await h.get("/health")).json()["engines"] >= 1:
                    break
                await asyncio.sleep(0.1)
        yield s


def _short(case: Case) -> Case:
    """Cap a generated body's token and choice counts (see MAX_TOKENS_CAP)."""
    body = case.body
    if isinstance(body, dict):
        caps = {"max_tokens": MAX_TOKENS_CAP, "max_completion_tokens": MAX_TOKENS_CAP}
        for key, cap in {**caps, "n": MAX_CHOICES_CAP}.items():
            value = body.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > cap:
                body[key] = cap
    return case


@pytest.mark.parametrize(
    ("operation", "mode"), RUNS, ids=[f"{op.label} {mode.value}" for op, mode in RUNS]
)
def test_http_api_conforms_to_its_schema(
    stack: Stack, operation: Any, mode: GenerationMode
) -> None:
    assert stack.http_url is not None
    session = requests.Session()
    per_case = max(5, CASES // len(RUNS))
    seen: list[int] = []

    @seed(13)
    @fuzz_settings(per_case)
    @given(operation.as_strategy(generation_mode=mode).map(_short))
    def check(case: Case) -> None:
        response = case.call(base_url=stack.http_url, session=session, timeout=60)
        seen.append(response.status_code)
        case.validate_response(response, checks=CHECKS)

    check()
    assert seen, "no case was generated"
    assert stack.group.running() == stack.group.names


def test_more_choices_than_openai_allows_are_refused(stack: Stack) -> None:
    """Each choice is a call: `n` is bounded (128, as OpenAI) so one request cannot queue
    millions of calls (the fuzz found `n: 10**9` hanging the frontend)."""
    assert stack.http_url is not None
    for path, body in (
        ("/v1/completions", {"model": "simulated", "prompt": "x", "n": 129}),
        (
            "/v1/chat/completions",
            {"model": "simulated", "messages": [{"role": "user", "content": "x"}], "n": 10**9},
        ),
    ):
        r = requests.post(f"{stack.http_url}{path}", json=body, timeout=30)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == "n", r.text
