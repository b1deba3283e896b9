"""Bearer API keys on the live HTTP API (frontend ``--api-key-file``), a real scheduler and
sim engine behind it: no key, a wrong key or another scheme is 401 in OpenAI's error shape on
every /v1 operation (schemathesis generates the requests from docs/openapi.json), a known key is
served, /health stays open, and a bad key file stops the frontend at start with a clear error.

Tenants: a program belongs to the tenant whose key opened it. Every route that names a program
(open, close, cancel, a call tagged with it, streamed or not, `n > 1`) answers another tenant
404 `program_not_found`, byte for byte the answer for a program that does not exist, and leaves
the program alone; its owner is served. Each tenant's unfinished calls are bounded
(`--max-unfinished-calls-per-tenant`): past it only that tenant gets 429 + Retry-After. With a
key, generated requests (schemathesis, positive) still get documented answers and no 5xx.

The dashboard's data (`/ui/api/snapshot`, `/ui/api/events`) follows the same ownership: a
tenant's key sees its own programs and calls only, an admin tenant's (`AUTELLIX_UI_ADMIN_TENANTS`)
every program, NATS-made ones included.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import requests
import schemathesis
from hypothesis import given, seed
from polling import poll_until
from schemathesis import Case
from schemathesis.checks import not_a_server_error, status_code_conformance
from svc_stack import Stack

from autellix.bench.chaos_strategies import fuzz_settings
from autellix.client import Client

OPENAPI = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
KEY_A = "key-of-tenant-a-0123456789"
KEY_B = "key-of-tenant-b-0123456789"
KEY_OPS = "key-of-the-operators-0123456789"
AUTH_A = {"Authorization": f"Bearer {KEY_A}"}
AUTH_B = {"Authorization": f"Bearer {KEY_B}"}
PER_TENANT = 3  # --max-unfinished-calls-per-tenant
LONG = 3000  # tokens: ~30 s at 10 ms a step, far longer than any test here waits
V1_OPERATIONS = [
    op.ok()
    for op in schemathesis.openapi.from_path(OPENAPI).get_all_operations()
    if op.ok().path.startswith("/v1")
]


@pytest_asyncio.fixture(scope="module")
async def stack(
    new_stack: Callable[[], Stack], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    keys = tmp_path_factory.mktemp("keys") / "api-keys.txt"
    keys.write_text(f"# two tenants\n{KEY_A} tenant-a\n\n{KEY_B} tenant-b\n{KEY_OPS} ops\n")
    s = new_stack()
    s.start_frontend(
        "--http-call-timeout", "30", "--api-key-file", str(keys),
        "--max-unfinished-calls-per-tenant", str(PER_TENANT), http=True,
        env={"AUTELLIX_UI_ADMIN_TENANTS": "ops", "AUTELLIX_UI_POLL_S": "0.2"},
    )  # fmt: skip
    s.start("scheduler", "scheduler")
    s.start_engine("keys-e1", "--token-latency", "0.01")
    async with s.running():
        async with httpx.AsyncClient(base_url=s.http_url) as h:
            for _ in range(100):
                if (await h.get("/health")).json()["engines"] >= 1:
                    break
                await asyncio.sleep(0.1)
        yield s


def _refused(r: Any) -> None:
    assert r.status_code == 401, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_api_key" and err["type"] == "invalid_request_error", r.text
    assert err["message"]


CHAT = {"model": "simulated", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}


def test_no_key_wrong_key_other_scheme_are_401(stack: Stack) -> None:
    url = stack.http_url
    assert url is not None
    for headers in ({}, {"Authorization": f"Bearer {KEY_A}x"}, {"Authorization": f"Basic {KEY_A}"},
                    {"Authorization": "Bearer"}, {"Authorization": KEY_A}):  # fmt: skip
        _refused(requests.get(f"{url}/v1/models", headers=headers, timeout=10))
        _refused(
            requests.post(f"{url}/v1/chat/completions", json=CHAT, headers=headers, timeout=10)
        )
        _refused(requests.post(f"{url}/v1/programs", json={}, headers=headers, timeout=10))
    r = requests.get(f"{url}/v1/models", timeout=10)
    assert r.headers.get("www-authenticate") == "Bearer"
    assert requests.get(f"{url}/health", timeout=10).status_code == 200


def test_known_keys_are_served(stack: Stack) -> None:
    url = stack.http_url
    assert url is not None
    for key in (KEY_A, KEY_B):
        auth = {"Authorization": f"Bearer {key}"}
        assert requests.get(f"{url}/v1/models", headers=auth, timeout=10).status_code == 200
        r = requests.post(f"{url}/v1/chat/completions", json=CHAT, headers=auth, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] is not None


@pytest.mark.parametrize("operation", V1_OPERATIONS, ids=[op.label for op in V1_OPERATIONS])
def test_every_v1_operation_needs_a_key(stack: Stack, operation: Any) -> None:
    """Generated requests (valid and not) without a key: always 401, never served, never 5xx."""
    assert stack.http_url is not None
    session = requests.Session()

    @seed(17)
    @fuzz_settings(15)
    @given(operation.as_strategy())
    def check(case: Case) -> None:
        if case.headers:
            case.headers.pop("Authorization", None)
        _refused(case.call(base_url=stack.http_url, session=session, timeout=30))

    check()
    assert stack.group.running() == stack.group.names


def test_bad_key_file_stops_the_frontend_at_start(tmp_path: Path) -> None:
    bad = tmp_path / "keys.txt"
    bad.write_text("short tenant\n")
    proc = subprocess.run(
        [sys.executable, "-m", "autellix.services.frontend", "--nats-url", "nats://127.0.0.1:1",
         "--database-url", "postgresql://x@127.0.0.1:1/x", "--http-port", "0",
         "--api-key-file", str(bad)],
        capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "400"},
    )  # fmt: skip
    assert proc.returncode != 0
    assert "unusable API key file" in proc.stderr and "line 1" in proc.stderr, proc.stderr


# --------------------------------------------------------------------------- tenants


def _pid() -> str:
    return f"p-tenant-test-{uuid.uuid4().hex[:10]}"


def _not_found(r: Any, program_id: str) -> dict[str, Any]:
    """The answer for an unknown program, with its id taken out (to compare two answers)."""
    assert r.status_code == 404, r.text
    body = r.json()
    err = body["error"]
    assert err["code"] == "program_not_found" and err["type"] == "invalid_request_error", body
    assert program_id in err["message"], body
    err["message"] = err["message"].replace(program_id, "<id>")
    return body


def _routes_naming(program_id: str) -> list[tuple[str, dict[str, Any], dict[str, str]]]:
    """Every HTTP request that names an existing program: (path, body, extra headers)."""
    prompt = {"model": "simulated", "prompt": "hi", "max_tokens": 2}
    return [
        ("/v1/programs", {"program_id": program_id}, {}),
        (f"/v1/programs/{program_id}/close", {}, {}),
        (f"/v1/programs/{program_id}/cancel", {}, {}),
        (f"/v1/programs/{program_id}/cancel", {"close": True}, {}),
        ("/v1/chat/completions", CHAT, {"X-Autellix-Program-Id": program_id}),
        ("/v1/chat/completions", {**CHAT, "program_id": program_id}, {}),
        ("/v1/chat/completions", {**CHAT, "program_id": program_id, "stream": True}, {}),
        ("/v1/chat/completions", {**CHAT, "program_id": program_id, "n": 2}, {}),
        ("/v1/completions", {**prompt, "program_id": program_id}, {}),
        ("/v1/completions", {**prompt, "program_id": program_id, "client_call_id": "k1"}, {}),
        ("/v1/completions", {**prompt, "stream": True}, {"X-Autellix-Program-Id": program_id}),
    ]


def test_another_tenants_program_is_not_found_on_every_route(stack: Stack) -> None:
    url = stack.http_url
    assert url is not None
    mine = _pid()
    r = requests.post(f"{url}/v1/programs", json={"program_id": mine}, headers=AUTH_A, timeout=10)
    assert r.status_code == 200 and r.json()["status"] == "open", r.text
    first = {**CHAT, "program_id": mine, "client_call_id": "k1"}
    r = requests.post(f"{url}/v1/chat/completions", json=first, headers=AUTH_A, timeout=60)
    assert r.status_code == 200, r.text
    call_id = r.headers["x-autellix-call-id"]
    for path, body, extra in _routes_naming(mine):
        absent = _pid()  # some routes create it: a new one each time
        theirs = requests.post(f"{url}{path}", json=body, headers={**AUTH_B, **extra}, timeout=60)
        none_path = path.replace(mine, absent)
        none_body = {k: absent if v == mine else v for k, v in body.items()}
        none_extra = {k: absent if v == mine else v for k, v in extra.items()}
        nobody = requests.post(
            f"{url}{none_path}", json=none_body, headers={**AUTH_A, **none_extra}, timeout=60
        )
        # no existence oracle: B's answer for A's program is A's answer for no program (for
        # the routes that would create the absent program, only B's answer is a 404)
        got = _not_found(theirs, mine)
        if path.endswith(("/close", "/cancel")):
            assert got == _not_found(nobody, absent), (path, theirs.text, nobody.text)
        else:
            assert nobody.status_code == 200, (path, nobody.text)
    # nothing B sent touched A's program: still open, still A's, its first call not re-run
    r = requests.post(f"{url}/v1/chat/completions", json=first, headers=AUTH_A, timeout=60)
    assert r.status_code == 200 and r.headers["x-autellix-call-id"] == call_id, r.text
    assert r.json()["autellix"]["duplicate"] is True, r.json()
    r = requests.post(f"{url}/v1/programs/{mine}/cancel", json={}, headers=AUTH_A, timeout=10)
    assert r.status_code == 200 and r.json()["status"] == "open", r.text
    r = requests.post(f"{url}/v1/programs/{mine}/close", headers=AUTH_A, timeout=10)
    assert r.status_code == 200 and r.json()["status"] == "closed", r.text
    assert r.json()["stats"]["calls"] == 1, r.json()
    log = stack.logs("frontend")
    assert "request for another tenant's program answered as unknown" in log
    assert "call for another tenant's program refused as unknown" in log


async def test_a_program_opened_over_nats_belongs_to_no_tenant(stack: Stack) -> None:
    """NATS clients authenticate per role, not per tenant: their programs have no tenant, and
    no API key reaches them; the NATS client still does."""
    async with Client(stack.settings.nats_url, namespace=stack.settings.namespace) as c:
        async with c.program() as p:
            assert p.program_id is not None
            async with httpx.AsyncClient(base_url=stack.http_url, timeout=10) as h:
                for auth in (AUTH_A, AUTH_B):
                    r = await h.post(f"/v1/programs/{p.program_id}/close", headers=auth)
                    _not_found(r, p.program_id)
            got = await p.call(prompt="still mine", max_tokens=2, timeout=30)
            assert got.usage.completion_tokens == 2


async def _unfinished(h: httpx.AsyncClient, auth: dict[str, str], program_id: str) -> Any:
    """A streamed call that runs for a long time; returns once it is accepted (status 200)."""
    body = {"model": "simulated", "prompt": "long", "max_tokens": LONG, "stream": True}
    req = h.build_request(
        "POST", "/v1/completions", json={**body, "program_id": program_id}, headers=auth
    )
    resp = await h.send(req, stream=True)
    assert resp.status_code == 200, await resp.aread()
    return resp


async def test_the_per_tenant_bound_refuses_only_the_heavy_tenant(stack: Stack) -> None:
    heavy = _pid()
    short = {"model": "simulated", "prompt": "x", "max_tokens": 2}
    async with (
        httpx.AsyncClient(base_url=stack.http_url, timeout=60) as h,
        contextlib.AsyncExitStack() as streams,
    ):
        for _ in range(PER_TENANT):  # keep them open: a client that goes away cancels its call
            resp = await _unfinished(h, AUTH_A, heavy)
            streams.push_async_callback(resp.aclose)
        r = await h.post("/v1/completions", json=short, headers=AUTH_A)
        assert r.status_code == 429, r.text
        assert r.headers["retry-after"] == "1" and r.json()["error"]["code"] == "overloaded"
        assert "tenant-a" in r.json()["error"]["message"], r.text
        r = await h.post("/v1/chat/completions", json={**CHAT, "n": 2}, headers=AUTH_A)
        assert r.status_code == 429, r.text
        for _ in range(2):  # the other tenant is admitted and served meanwhile
            r = await h.post("/v1/completions", json=short, headers=AUTH_B)
            assert r.status_code == 200, r.text
        r = await h.post(f"/v1/programs/{heavy}/cancel", json={"close": True}, headers=AUTH_A)
        assert r.status_code == 200 and len(r.json()["cancelled"]) == PER_TENANT, r.text

    async def admitted_again() -> bool:
        r = await h2.post("/v1/completions", json=short, headers=AUTH_A)
        assert r.status_code in (200, 429), r.text
        return r.status_code == 200

    async with httpx.AsyncClient(base_url=stack.http_url, timeout=60) as h2:
        await poll_until(admitted_again, within_s=10, what="tenant-a admitted after its cancel")


@pytest.mark.parametrize("operation", V1_OPERATIONS, ids=[op.label for op in V1_OPERATIONS])
def test_generated_requests_with_a_key_get_documented_answers(stack: Stack, operation: Any) -> None:
    """Schemathesis (valid requests by the schema) with tenant B's key: documented statuses
    only, no 5xx; generated program ids are B's own or unknown."""
    assert stack.http_url is not None
    session = requests.Session()

    def short(case: Case) -> Case:
        if isinstance(case.body, dict):
            for key, cap in (("max_tokens", 4), ("max_completion_tokens", 4), ("n", 2)):
                value = case.body.get(key)
                if isinstance(value, int) and not isinstance(value, bool) and value > cap:
                    case.body[key] = cap
        return case

    @seed(19)
    @fuzz_settings(10)
    @given(operation.as_strategy().map(short))
    def check(case: Case) -> None:
        case.headers = {**(case.headers or {}), **AUTH_B}
        response = case.call(base_url=stack.http_url, session=session, timeout=60)
        case.validate_response(response, checks=[not_a_server_error, status_code_conformance])

    check()
    assert stack.group.running() == stack.group.names


# --------------------------------------------------------------------------- the dashboard


async def _dashboard(h: httpx.AsyncClient, key: str, want: set[str]) -> dict[str, Any]:
    """The newest snapshot `key` may see, once it holds the programs in `want` (or the last one
    read after 10 s: the assertions then say what is missing)."""
    snap: dict[str, Any] = {}
    for _ in range(50):
        r = await h.get("/ui/api/snapshot", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200, r.text
        snap = r.json()
        if want <= {p["id"] for p in snap["programs"]}:
            break
        await asyncio.sleep(0.2)
    return snap


async def test_the_dashboard_shows_a_tenant_only_its_own_programs(stack: Stack) -> None:
    pa, pb, pn = _pid(), _pid(), _pid()
    async with httpx.AsyncClient(base_url=stack.http_url or "", timeout=60) as h:
        for auth, pid in ((AUTH_A, pa), (AUTH_B, pb)):
            r = await h.post("/v1/chat/completions", json={**CHAT, "program_id": pid}, headers=auth)
            assert r.status_code == 200, r.text
        async with Client(stack.settings.nats_url, namespace=stack.settings.namespace) as c:
            async with c.program(pn) as prog:
                await prog.call("over nats", max_tokens=2)

        ops = await _dashboard(h, KEY_OPS, {pa, pb, pn})
        seen = {p["id"]: p for p in ops["programs"]}
        assert {pa, pb, pn} <= set(seen), sorted(seen)
        assert (seen[pa]["tenant"], seen[pb]["tenant"], seen[pn]["tenant"]) == (
            "tenant-a", "tenant-b", None,
        )  # fmt: skip
        assert ops["scope"] is None

        mine = await _dashboard(h, KEY_A, {pa})
        assert mine["scope"] == "tenant-a"
        assert {p["tenant"] for p in mine["programs"]} == {"tenant-a"}
        assert pa in {p["id"] for p in mine["programs"]}
        assert {c["program_id"] for c in mine["calls"]} <= {p["id"] for p in mine["programs"]}
        text = json.dumps(mine)
        assert pb not in text and pn not in text  # not in programs, calls, paths or links
        assert mine["engines"] and mine["engines"][0]["id"] == "keys-e1"  # the load stays

        r = await h.get("/ui/api/session", headers=AUTH_B)
        assert r.json()["scope"] == "tenant-b" and r.json()["tenant"] == "tenant-b"
        r = await h.get("/ui/api/session", headers={"Authorization": f"Bearer {KEY_OPS}"})
        assert r.json()["scope"] is None
