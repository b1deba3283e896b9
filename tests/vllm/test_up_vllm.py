"""`autellix up --backend vllm --model dummy:tiny` starts a real vLLM engine that serves the API.

The command a user types, as a process of its own (embedded NATS and Postgres in its data dir):
once `/health` counts the engine, a chat completion, a forced tool call, a `json_schema` answer
and logprobs are answered by the vLLM engine (dummy weights, the preset's offline tokenizer and
tool-aware chat template), an unknown model is a 404, and `/metrics` carries `autellix:` series
for that engine with no `OTEL_*` setting. Ctrl-C (SIGINT) stops it all and removes its stack file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import pytest
from prometheus_client.parser import text_string_to_metric_families

from autellix.runtime import api_keys
from tests.svc_stack import free_port

pytestmark = pytest.mark.vllm

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
ANSWER = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 10}, "sunny": {"type": "boolean"}},
    "required": ["city", "sunny"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str | None]]:
    pytest.importorskip("vllm")
    root = tmp_path_factory.mktemp("up-vllm")
    (root / "tmp").mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(
        TMPDIR=str(root / "tmp"), AUTELLIX_VLLM_MODEL_DIR=str(root / "models"), COLUMNS="200"
    )
    argv = [
        sys.executable, "-m", "autellix.cli", "up",
        "--backend", "vllm", "--model", "dummy:tiny",
        "--http-port", str(port), "--data-dir", str(root / "data"), "--nats-port", "0",
        "--engine-batch", "2", "--kv-cache-gib", "0.0625", "--log-dir", str(root / "logs"),
        "--quiet", "--insecure",  # HTTP without API keys here; keys: test_http_api_keys.py
    ]  # fmt: skip
    log = (root / "up.log").open("w")
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            assert proc.poll() is None, (root / "up.log").read_text()[-3000:]
            if (root / "data" / "stack.json").exists():
                break
            time.sleep(1.0)
        else:
            pytest.fail("autellix up was not ready in 600 s:\n" + (root / "up.log").read_text())
        banner = (root / "up.log").read_text()
        assert "vllm engine, model dummy:tiny, batch 2" in banner, banner
        # the HTTP API takes the key `autellix up` made, named by stack.json
        found = json.loads((root / "data" / "stack.json").read_text())
        key_file = found["credentials"]["api_key_file"]
        yield url, next(iter(api_keys.read(key_file))) if key_file else None
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            assert proc.wait(timeout=120) == 0, (root / "up.log").read_text()[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
            log.close()
    assert not (root / "data" / "stack.json").exists()


def test_up_vllm_serves_chat_tools_and_metrics(up: tuple[str, str | None]) -> None:
    url, key = up
    auth = {"Authorization": f"Bearer {key}"} if key else {}
    with httpx.Client(base_url=url, timeout=400.0, headers=auth) as http:
        health = http.get("/health").json()
        assert health["engines"] == 1 and health["models"] == ["dummy:tiny"], health
        models = http.get("/v1/models").json()["data"]
        assert [(m["id"], m["backends"]) for m in models] == [("dummy:tiny", ["vllm"])]

        ask = [{"role": "user", "content": "what is the weather in paris"}]
        r = http.post(
            "/v1/chat/completions",
            json={"model": "dummy:tiny", "messages": ask, "max_tokens": 8, "temperature": 0},
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["usage"]["completion_tokens"] >= 1
        assert body["autellix"]["backend"] == "vllm"

        r = http.post(
            "/v1/chat/completions",
            json={
                "model": "dummy:tiny",
                "messages": ask,
                "tools": [WEATHER],
                "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
                "max_tokens": 64,
                "temperature": 0,
            },
        )
        assert r.status_code == 200, r.text
        choice = r.json()["choices"][0]
        assert choice["finish_reason"] == "tool_calls", choice
        (call,) = choice["message"]["tool_calls"]
        assert call["function"]["name"] == "get_weather"
        assert isinstance(json.loads(call["function"]["arguments"])["city"], str)

        r = http.post(
            "/v1/chat/completions",
            json={
                "model": "dummy:tiny",
                "messages": ask,
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "answer", "schema": ANSWER},
                },
                "max_tokens": 64,
                "temperature": 0,
            },
        )
        assert r.status_code == 200, r.text
        answer = json.loads(r.json()["choices"][0]["message"]["content"])
        jsonschema.validate(answer, ANSWER)

        r = http.post(
            "/v1/chat/completions",
            json={
                "model": "dummy:tiny",
                "messages": ask,
                "max_tokens": 4,
                "logprobs": True,
                "top_logprobs": 2,
            },
        )
        assert r.status_code == 200, r.text
        content = r.json()["choices"][0]["logprobs"]["content"]
        assert len(content) == r.json()["usage"]["completion_tokens"]
        assert all(e["logprob"] <= 0 and len(e["top_logprobs"]) == 2 for e in content)

        r = http.post(
            "/v1/chat/completions",
            json={"model": "no-such-model", "messages": ask, "max_tokens": 2},
        )
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"

        page = http.get("/metrics")
    assert page.status_code == 200
    got: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(page.text):
        for s in family.samples:
            got.setdefault(s.name, []).append((s.labels, s.value))
    engines = {labels["engine_id"] for labels, _ in got["autellix:engine_running"]}
    assert len(engines) == 1 and next(iter(engines)).startswith("vllm-")
    assert all(labels["backend"] == "vllm" for labels, _ in got["autellix:engine_queue_depth"])
    ttft: list[tuple[dict[str, Any], float]] = got["autellix:time_to_first_token_seconds_count"]
    assert sum(v for _, v in ttft) == 4.0  # the four calls answered
