"""A real Prometheus scrapes a real stack; every Grafana panel's query is answered by it.

The services (frontend with its HTTP API, an ATLAS scheduler, one simulated engine with a batch
of 1) run with only the standard OpenTelemetry variables set (`OTEL_METRICS_EXPORTER=prometheus`
and each its own exporter port). Prometheus runs from the `prometheus` binary (Debian's
`prometheus` package) with the compose configuration `deploy/prometheus/prometheus.yml`, its
jobs pointed at those ports and a 1 s scrape interval. The calls are chosen so every dashboard
series has data: a preemption (batch 1, a light program's call arrives while a heavier one
runs), a call the engine fails (longer than the engine's context) and an HTTP call (a
one-call program: the program metrics and the HTTP outcome counter).

Checked through Prometheus's HTTP API: every job's targets are up; the scheduler's decisions
counter equals the calls made; the engine counted the preemption and the failure; and every
dashboard query (`tests/grafana_dashboard.py`) parses, returns series, and those series carry
the labels its legend shows, while every metric name it reads is among the scraped names.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import yaml
from grafana_dashboard import load_dashboard, metric_names, targets
from svc_stack import Stack, WireCall, WireRecorder

from autellix.wire.protocol import CallError, CallFinal, CallRequest, ErrorCode, SamplingParams

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
PROMETHEUS = shutil.which("prometheus")

pytestmark = pytest.mark.skipif(
    PROMETHEUS is None,
    reason="no `prometheus` binary (Debian: apt-get install -y prometheus; .ci/run installs it)",
)

JOBS = ("autellix-frontend", "autellix-scheduler", "autellix-engine")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def metrics_env(port: int) -> dict[str, str]:
    return {
        "OTEL_METRICS_EXPORTER": "prometheus",
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
        "OTEL_EXPORTER_PROMETHEUS_PORT": str(port),
    }


def local_config(targets_by_job: dict[str, list[str]]) -> dict[str, Any]:
    """The compose configuration with each job's targets replaced by this host's ports (its
    DNS discovery names compose services) and a 1 s scrape interval; every job must be mapped,
    so a job added to the compose file is added here too."""
    config = yaml.safe_load(COMPOSE_CONFIG.read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == set(targets_by_job), f"compose jobs {sorted(jobs)}"
    for name, job in jobs.items():
        job.pop("dns_sd_configs", None)
        job["static_configs"] = [{"targets": targets_by_job[name]}]
    return config


@dataclass
class Monitored:
    stack: Stack
    http_url: str
    prometheus_url: str

    async def query(self, promql: str) -> list[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=self.prometheus_url, timeout=10) as h:
            r = await h.get("/api/v1/query", params={"query": promql})
        body = r.json()
        assert r.status_code == 200 and body["status"] == "success", (promql, body)
        assert body["data"]["resultType"] == "vector", (promql, body["data"]["resultType"])
        return list(body["data"]["result"])

    async def value(self, promql: str) -> float | None:
        result = await self.query(promql)
        return float(result[0]["value"][1]) if result else None

    async def until(self, promql: str, ok: Callable[[float], bool], wait_s: float = 30.0) -> float:
        deadline = time.monotonic() + wait_s
        seen: float | None = None
        while time.monotonic() < deadline:
            seen = await self.value(promql)
            if seen is not None and ok(seen):
                return seen
            await asyncio.sleep(0.5)
        raise AssertionError(f"{promql}: last value {seen}")


@pytest.fixture(scope="module")
def ports() -> dict[str, int]:
    return {name: free_port() for name in ("frontend", "scheduler", "engine", "http", "prom")}


@pytest.fixture(scope="module")
def prometheus(ports: dict[str, int], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    assert PROMETHEUS is not None
    d = tmp_path_factory.mktemp("prometheus")
    config = local_config(
        {
            "autellix-frontend": [f"127.0.0.1:{ports['frontend']}"],
            "autellix-scheduler": [f"127.0.0.1:{ports['scheduler']}"],
            "autellix-engine": [f"127.0.0.1:{ports['engine']}"],
            "prometheus": [f"127.0.0.1:{ports['prom']}"],
        }
    )
    (d / "prometheus.yml").write_text(yaml.safe_dump(config))
    check = subprocess.run(
        ["promtool", "check", "config", str(d / "prometheus.yml")], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    url = f"http://127.0.0.1:{ports['prom']}"
    with (d / "prometheus.log").open("w") as log:
        proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={d / 'prometheus.yml'}",
                f"--storage.tsdb.path={d / 'data'}",
                f"--web.listen-address=127.0.0.1:{ports['prom']}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (d / "prometheus.log").read_text()[-3000:]
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "Prometheus not ready in 30 s"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest_asyncio.fixture(scope="module")
async def stack(new_stack: Callable[[], Stack], ports: dict[str, int]) -> AsyncIterator[Stack]:
    s = new_stack()
    s.start(
        "frontend",
        "frontend",
        "--http-port",
        str(ports["http"]),
        env=metrics_env(ports["frontend"]),
    )
    s.start(
        "scheduler",
        "scheduler",
        *("--policy", "atlas", "--quantum", "32", "--levels", "5"),
        *("--min-run-tokens", "4", "--fold-interval", "0.02"),
        env=metrics_env(ports["scheduler"]),
    )
    s.start(
        "prom-e1",
        "engine",
        *("--engine-id", "prom-e1", "--max-batch", "1", "--token-latency", "0.01"),
        *("--report-interval", "0.03", "--max-model-len", "1024"),
        stop_timeout=30.0,
        env=metrics_env(ports["engine"]),
    )
    async with s.running():
        yield s


@pytest_asyncio.fixture(scope="module")
async def monitored(stack: Stack, prometheus: str, ports: dict[str, int]) -> Monitored:
    return Monitored(stack, f"http://127.0.0.1:{ports['http']}", prometheus)


def _req(program: str, tokens: int, tag: str) -> CallRequest:
    return CallRequest(
        program_id=program,
        prompt=f"{program} {tag}: please continue",
        sampling=SamplingParams(max_tokens=tokens),
    )


async def _streaming(call: WireCall, wait_s: float = 20.0) -> None:
    deadline = time.monotonic() + wait_s
    while len(call.messages) < 2:  # accepted, then the first delta
        assert time.monotonic() < deadline, "no tokens streamed"
        await asyncio.sleep(0.01)


async def test_prometheus_scrapes_the_stack_and_answers_every_dashboard_query(
    monitored: Monitored, wire: WireRecorder
) -> None:
    m = monitored
    for job in JOBS:
        await m.until(f'min(up{{job="{job}"}})', lambda v: v == 1)

    # a preemption: the heavy program's long call runs at batch 1 when a light one arrives
    history = await wire.run(_req("prom-heavy", 50, "history"))
    victim = await wire.submit(_req("prom-heavy", 150, "long"))
    await _streaming(victim)
    await asyncio.sleep(0.15)  # past the 4-token protection
    light = await wire.submit(_req("prom-light", 20, "short"))
    # a call the engine fails: longer than the engine's 1024-token context (and small enough for
    # the bus, which the frontend checks first)
    failing = await wire.run(_req("prom-fail", 2_000, "too long"))
    await asyncio.wait_for(asyncio.gather(victim.done.wait(), light.done.wait()), 60)
    assert isinstance(history.final, CallFinal) and isinstance(light.final, CallFinal)
    assert victim.final.preemptions >= 1
    (err,) = failing.terminal
    assert isinstance(err, CallError) and err.code == ErrorCode.prompt_too_long
    # an HTTP one-call program: program metrics, the HTTP outcome counter
    async with httpx.AsyncClient(base_url=m.http_url, timeout=60) as h:
        r = await h.post(
            "/v1/completions", json={"model": "simulated", "prompt": "hi", "max_tokens": 8}
        )
    assert r.status_code == 200, r.text

    calls = 5  # every call above was dispatched once (preemption requeues at the engine)
    await m.until("sum(autellix_scheduler_decisions_total)", lambda v: v == calls)
    await m.until("sum(autellix_engine_preemptions_total)", lambda v: v >= 1)
    await m.until(
        'sum(autellix_calls_failed_total{error_type="prompt_too_long"})', lambda v: v == 1
    )
    await m.until("sum(autellix_program_duration_seconds_count)", lambda v: v >= 1)
    await m.until(
        'sum(autellix_frontend_calls_total{autellix_outcome="accepted"})', lambda v: v == 1
    )
    await asyncio.sleep(3)  # a few more scrapes: every rate() window holds several samples

    async with httpx.AsyncClient(base_url=m.prometheus_url, timeout=10) as h:
        scraped = set((await h.get("/api/v1/label/__name__/values")).json()["data"])
    for t in targets(load_dashboard()):
        missing = metric_names(t.promql) - scraped
        assert not missing, f"panel {t.panel!r} reads metrics nobody exports: {missing}"
        series = await m.query(t.promql)
        assert series, f"panel {t.panel!r} ({t.ref_id}): no series for {t.promql}"
        for s in series:
            absent = t.legend_labels - set(s["metric"])
            assert not absent, f"panel {t.panel!r}: series {s['metric']} lack labels {absent}"
