"""`/metrics` on the frontend's HTTP port answers `autellix:` series with no `OTEL_*` setting.

A real frontend, scheduler and simulated engine (each step 20 ms, so calls have a measurable
first-token time), with every `OTEL_*` variable removed from their environment. After HTTP
calls (one-call programs, closed when their call ends) the page must carry the engine's queue
depth per level and running calls from its heartbeats, and time-to-first-token, end-to-end and
program latency histograms whose counts match the calls made.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from tests.svc_stack import Stack

pytestmark = pytest.mark.asyncio(loop_scope="module")

ENGINE = "metrics-e1"
CALLS = 3


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(new_stack: Any, monkeypatch_module: pytest.MonkeyPatch) -> AsyncIterator[Stack]:
    for name in [k for k in os.environ if k.startswith("OTEL_")]:
        monkeypatch_module.delenv(name)
    s = new_stack()
    s.start_frontend(http=True)
    s.start("scheduler", "scheduler")
    s.start_engine(ENGINE, "--token-latency", "0.02", "--max-batch", "4")
    async with s.running():
        yield s


@pytest.fixture(scope="module")
def monkeypatch_module() -> Any:
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every sample on the page by sample name: (labels, value)."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


async def until_engine_heard(http: httpx.AsyncClient) -> None:
    """The engine's heartbeats (one a second) reached the frontend: its gauges are served."""
    for _ in range(100):
        if samples((await http.get("/metrics")).text).get("autellix:engines_live") == [({}, 1.0)]:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the frontend heard no heartbeat from the engine within 10 s")


async def test_metrics_without_otel(stack: Stack) -> None:
    assert stack.http_url is not None
    async with httpx.AsyncClient(base_url=stack.http_url, timeout=60.0) as http:
        await until_engine_heard(http)
        for i in range(CALLS):
            r = await http.post(
                "/v1/chat/completions",
                json={
                    "model": "simulated",
                    "messages": [{"role": "user", "content": f"count to ten ({i})"}],
                    "max_tokens": 5,
                    "stream": i == 0,
                },
            )
            assert r.status_code == 200, r.text
        r = await http.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    got = samples(r.text)
    engine = {"engine_id": ENGINE, "backend": "sim"}

    depth = got["autellix:engine_queue_depth"]
    levels = {labels["level"] for labels, _ in depth if labels["engine_id"] == ENGINE}
    assert levels and "0" in levels
    assert (engine, 4.0) in got["autellix:engine_batch_capacity"]
    assert any(labels == engine for labels, _ in got["autellix:engine_running"])
    assert got["autellix:engines_live"] == [({}, 1.0)]

    assert (engine, float(CALLS)) in got["autellix:time_to_first_token_seconds_count"]
    assert (engine, float(CALLS)) in got["autellix:e2e_request_latency_seconds_count"]
    assert (engine, float(CALLS)) in got["autellix:calls_finished_total"]
    ttft_sum = next(v for labels, v in got["autellix:time_to_first_token_seconds_sum"])
    e2e_sum = next(v for labels, v in got["autellix:e2e_request_latency_seconds_sum"])
    assert 0.0 < ttft_sum <= e2e_sum  # first token before the final; 5 steps of 20 ms each
    assert e2e_sum >= CALLS * 5 * 0.02 * 0.9

    # one-call programs are closed by the frontend when their call ends (spawned: poll)
    async with httpx.AsyncClient(base_url=stack.http_url, timeout=10.0) as http:
        for _ in range(50):
            got = samples((await http.get("/metrics")).text)
            if got["autellix:program_latency_seconds_count"] == [({}, float(CALLS))]:
                break
            await asyncio.sleep(0.1)
    assert got["autellix:program_latency_seconds_count"] == [({}, float(CALLS))]
    assert got["autellix:program_latency_per_token_seconds_count"] == [({}, float(CALLS))]
