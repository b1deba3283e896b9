"""The live dashboard at `/ui`, rendered by headless Chromium against a real stack.

Real processes (two frontends with their HTTP APIs: one open, one with API keys; ATLAS
scheduler, two simulated engines with a batch of one each, so a light program's call preempts a
heavy one's), real NATS and Postgres. The browser logs in to the keyed frontend through its form
(a wrong key first) and opens the page *before* the workload, so its queue-depth charts sample
the workload while it runs. Then the rendered DOM must show what Postgres recorded: each
engine's timeline holds the calls that ran there, the programs table lists every program with
its latency, the preempted call is marked where it was preempted, and one program's call graph
renders with its critical path. A screenshot goes to docs/img/dashboard.png (the README shows
it). The data routes refuse a request without a session or key, or with a wrong or forged one;
the login form is fuzzed; the open frontend needs no login.

The browser test is skipped when no Chromium is installed (`apt-get install chromium`; .ci/run
does it). The last test checks the dashboard's queries' window and caps on a database of its own.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import httpx
import pytest
import pytest_asyncio
from chromium_cdp import Chromium, find_chromium
from hypothesis import given
from hypothesis import strategies as st
from polling import poll_until
from svc_stack import Stack, WireCall, WireRecorder, db_fetch, free_port

from autellix.bench.chaos_strategies import fuzz_settings
from autellix.runtime.settings import Settings
from autellix.runtime.telemetry import program_ids
from autellix.services.frontend.ui_encode import apply_delta
from autellix.services.frontend.ui_session import SessionSigner
from autellix.store.db import create_pool
from autellix.store.ui_queries import WindowLimits, read_window
from autellix.wire.protocol import CallFinal, CallRequest, SamplingParams, TokenDelta

needs_chromium = pytest.mark.skipif(
    find_chromium() is None,
    reason="the dashboard test renders the page in headless Chromium, and none is installed "
    "(apt-get install chromium)",
)

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "docs" / "img" / "dashboard.png"
ENGINES = ("dash-e1", "dash-e2")
#: where trace links point (nothing needs to listen there: the test reads the links)
JAEGER = "http://127.0.0.1:16686"
PROGRAM_ROWS = "[...document.querySelectorAll('#programs tbody tr')].map(t => t.dataset.programId)"
CALL_ROWS = "[...document.querySelectorAll('#program-calls tbody tr')].map(t => t.dataset.callId)"
#: a shared prompt prefix well over one 16-token block: later calls of a program hit the cache
CONTEXT = "You are a careful planning agent working through a long task, step by step. " * 4
#: the keyed frontend's API keys: the tenant `autellix up` generates, and another one
KEY = "dash-key-of-default-0123456789"
OTHER_KEY = "dash-key-of-tenant-b-0123456789"
#: the keyed frontend's base URL (the open one is `stack.http_url`)
KEYED: dict[str, str] = {}
SESSION_COOKIE = "autellix_ui_session"


@pytest_asyncio.fixture(scope="module")
async def stack(
    new_stack: Callable[[], Stack], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    s = new_stack()
    port, keyed_port = free_port(), free_port()
    s.http_url = f"http://127.0.0.1:{port}"
    KEYED["url"] = f"http://127.0.0.1:{keyed_port}"
    keys = tmp_path_factory.mktemp("dash-keys") / "api-keys.txt"
    keys.write_text(f"{KEY} default\n{OTHER_KEY} tenant-b\n")
    env = {"AUTELLIX_JAEGER_UI_URL": JAEGER}
    s.start("frontend", "frontend", "--http-port", str(port), env=env)
    s.start(
        "frontend-keyed",
        "frontend",
        *("--http-port", str(keyed_port), "--api-key-file", str(keys)),
        env=env,
    )
    s.start(
        "scheduler",
        "scheduler",
        *("--policy", "atlas", "--quantum", "32", "--levels", "5", "--beta", "3"),
        *("--min-run-tokens", "4", "--fold-interval", "0.02", "--starvation-interval", "0.2"),
    )
    for name in ENGINES:
        s.start_engine(
            name, *("--max-batch", "1", "--token-latency", "0.01", "--report-interval", "0.03")
        )
    async with s.running():
        yield s


def _req(program: str, tokens: int, thread: str = "main", parents: list[str] | None = None,
         tag: str = "") -> CallRequest:  # fmt: skip
    return CallRequest(
        program_id=program,
        thread_id=thread,
        parent_ids=parents or [],
        prompt=f"{CONTEXT} [{program} {thread} {tag}] please continue",
        sampling=SamplingParams(max_tokens=tokens),
    )


async def _done(*calls: WireCall, wait_s: float = 90.0) -> None:
    await asyncio.wait_for(asyncio.gather(*(c.done.wait() for c in calls)), wait_s)
    for c in calls:
        assert isinstance(c.final, CallFinal), c.messages


async def _workload(wire: WireRecorder) -> dict[str, Any]:
    """Heavy programs with history fill both engines, light programs preempt them, and an agent
    program fans out into two threads and joins them (parents)."""
    for heavy in ("dash-heavy-a", "dash-heavy-b"):
        await wire.run(_req(heavy, 60, tag="history"), wait_s=60)  # ATLAS service 60: level 1
    long_calls = [
        await wire.submit(_req(heavy, 150, thread=f"t{i}", tag="long"))
        for heavy in ("dash-heavy-a", "dash-heavy-b")
        for i in range(2)
    ]
    first = long_calls[0]
    await poll_until(
        lambda: any(isinstance(m, TokenDelta) for m in first.messages),
        within_s=20,
        what="the first long call streaming",
    )
    await asyncio.sleep(0.2)  # well past the 4-token protection of a fresh run
    light = [await wire.submit(_req(f"dash-light-{i}", 20)) for i in range(3)]
    root = await wire.run(_req("dash-agent", 30, tag="plan"), wait_s=60)
    assert root.call_id is not None
    children = [
        await wire.submit(_req("dash-agent", n, thread=t, parents=[root.call_id], tag="tool"))
        for t, n in (("search", 25), ("code", 50))
    ]
    await _done(*children)
    join_parents = [c.call_id for c in children if c.call_id]
    join = await wire.run(_req("dash-agent", 20, parents=join_parents, tag="answer"), wait_s=60)
    await _done(*long_calls, *light, join)
    return {"root": root, "children": children, "join": join}


async def _js(page: Chromium, expression: str) -> Any:
    return await page.evaluate(expression)


@needs_chromium
async def test_dashboard_shows_engines_programs_preemptions_and_a_call_graph(
    stack: Stack, wire: WireRecorder, module_settings: Settings
) -> None:
    db = module_settings.database_url
    async with Chromium() as page:
        # keys on: the page sends a browser without a session to the login form
        await page.navigate(f"{KEYED['url']}/ui/")
        await page.wait_for("location.pathname === '/ui/login' && !!document.getElementById('key')")
        await _log_in(page, KEY + "x")  # a wrong key: the form says so
        await page.wait_for("!!document.getElementById('login-error')")
        assert "not one of" in await _js(page, "document.getElementById('login-error').textContent")
        await _log_in(page, KEY)
        await page.wait_for("document.getElementById('conn').textContent === 'live'")
        assert await _js(page, "location.pathname") == "/ui/"
        assert await _js(page, "document.cookie") == "", "the session cookie is HttpOnly"
        await page.wait_for(
            "document.getElementById('who').textContent === 'tenant default · all tenants'"
        )
        assert await _js(page, "document.getElementById('logout').hidden") is False
        agent = await _workload(wire)
        calls = await db_fetch(db, "SELECT * FROM calls ORDER BY id")
        programs = await db_fetch(db, "SELECT * FROM programs ORDER BY id")
        want_seq = int(await _js(page, "Number(document.body.dataset.seq || 0)")) + 2
        # the page has taken in a snapshot read after every call finished
        await page.wait_for(f"Number(document.body.dataset.seq || 0) >= {want_seq}")
        # after the first whole snapshot the page kept up through deltas (only what changed)
        assert int(await _js(page, "Number(document.body.dataset.deltas || 0)")) >= 1

        # every engine's timeline holds exactly the calls that ran on it
        for engine in ENGINES:
            ran = {c["id"] for c in calls if c["engine_id"] == engine and c["started_at"]}
            assert ran, f"no call ran on {engine}: the workload should use both engines"
            shown = set(
                await _js(
                    page,
                    f"[...document.querySelectorAll('#timeline-{engine} "
                    ".seg-label[data-kind=running]')].map(n => n.dataset.callId)",
                )
            )
            assert shown == ran, f"{engine}: timeline shows {shown ^ ran} differently"

        # the preempted calls are marked on their engine's timeline, with whom they made room for
        preempted = [c for c in calls if c["preemptions"] > 0]
        assert preempted, "the workload should provoke a preemption"
        for c in preempted:
            marks = await _js(
                page,
                f"document.querySelectorAll('#timeline-{c['engine_id']} "
                f'.mark-preempt[data-call-id="{c["id"]}"]\').length',
            )
            assert marks >= 1, f"preemption of {c['id']} not marked"
            flagged = await _js(
                page,
                f'!!document.querySelector(\'.seg-label[data-call-id="{c["id"]}"]'
                "[data-preempted=true]')",
            )
            assert flagged

        # the programs table lists every program, each with its latency so far
        rows = await _js(
            page,
            "[...document.querySelectorAll('#programs tbody tr')].map(tr => [tr.dataset.programId,"
            " tr.querySelector('td[data-key=latency_s]').textContent])",
        )
        latency = {pid: float(text) for pid, text in rows}
        assert set(latency) == {p["id"] for p in programs}
        for p in programs:
            lived = (p["last_finish_at"] - p["created_at"]).total_seconds()
            assert latency[p["id"]] >= lived - 0.01, p["id"]

        # programs link to their traces in Jaeger (AUTELLIX_JAEGER_UI_URL)
        href = await _js(
            page,
            "document.querySelector('#programs tr[data-program-id=\"dash-agent\"] a.trace').href",
        )
        assert href == f"{JAEGER}/trace/{program_ids('dash-agent')[0]:032x}"

        # the table sorts and searches
        await _js(page, "document.querySelector('#programs th[data-key=id]').click()")
        ids = await _js(
            page,
            "[...document.querySelectorAll('#programs tbody tr')].map(t => t.dataset.programId)",
        )
        assert ids == sorted(ids)
        await _js(
            page,
            "(() => { const s = document.getElementById('program-search'); s.value = 'light';"
            " s.dispatchEvent(new Event('input')); })()",
        )
        ids = await _js(
            page,
            "[...document.querySelectorAll('#programs tbody tr')].map(t => t.dataset.programId)",
        )
        assert ids == [f"dash-light-{i}" for i in range(3)]
        await _js(
            page,
            "(() => { const s = document.getElementById('program-search'); s.value = '';"
            " s.dispatchEvent(new Event('input')); })()",
        )

        # one program's call graph: its calls, their dependencies and the critical path
        await _js(
            page, "document.querySelector('#programs tr[data-program-id=\"dash-agent\"]').click()"
        )
        await page.wait_for(
            "document.getElementById('graph-section').dataset.programId === 'dash-agent'"
        )
        agent_rows = await _js(page, CALL_ROWS)
        # in arrival order at the frontend: call ids start with it (calls is ordered by id)
        agent_calls = [c for c in calls if c["program_id"] == "dash-agent"]
        assert agent_rows == [c["id"] for c in agent_calls]
        slower = max(agent["children"], key=lambda c: c.finished or 0.0)
        critical = await _js(page, "document.getElementById('graph-section').dataset.critical")
        assert critical.split(",") == [agent["root"].call_id, slower.call_id, agent["join"].call_id]
        nodes = await _js(page, "document.querySelectorAll('#callgraph svg path').length")
        assert nodes >= len(agent_calls)
        labels = await _js(page, "document.getElementById('callgraph').textContent")
        assert all(c["id"][-6:] in labels for c in agent_calls)
        waits = await _js(
            page,
            "[...document.querySelectorAll('#program-calls tbody tr')].map(tr => "
            "[tr.querySelector('td[data-key=wait_s]').textContent,"
            " tr.querySelector('td[data-key=run_s]').textContent])",
        )
        for (wait, run), c in zip(waits, agent_calls, strict=True):
            assert float(run) == pytest.approx(c["run_s"], abs=0.006)
            life = (c["finished_at"] - c["accepted_at"]).total_seconds()
            assert float(wait) + float(run) == pytest.approx(life, abs=0.011)

        # the queue-depth charts sampled the workload while it ran (the page was open)
        snap = json.loads(await _js(page, "fetch('api/snapshot').then(r => r.text())"))
        for engine in ENGINES:
            running = snap["queue_depth"][engine]["running"]
            assert any(v > 0 for ys in running.values() for v in ys), engine
            drawn = await _js(page, f"document.querySelectorAll('#depth-{engine} svg path').length")
            assert drawn > 0

        await _js(
            page, "document.querySelector('#programs th[data-key=latency_s]').click()"
        )  # back to the busiest first for the picture
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        await page.screenshot(SCREENSHOT)

        # logging out ends the session: back to the form, and the page sends one there again
        await _js(page, "document.querySelector('#logout button').click()")
        await page.wait_for("location.pathname === '/ui/login' && !!document.getElementById('key')")
        await page.navigate(f"{KEYED['url']}/ui/?after=logout")  # the cookie is gone
        await page.wait_for("location.pathname === '/ui/login' && !!document.getElementById('key')")
    assert SCREENSHOT.stat().st_size > 20_000


async def _log_in(page: Chromium, key: str) -> None:
    """Paste `key` into the login form and send it, as a person would."""
    await page.wait_for("!!document.getElementById('key')")
    await _js(
        page,
        f"(() => {{ document.getElementById('key').value = {json.dumps(key)};"
        " document.querySelector('#login button').click(); })()",
    )
    await page.wait_for("document.readyState === 'complete'")


async def _read_events(
    url: str, n: int, into: list[dict[str, Any]], kinds: list[str] | None = None
) -> None:
    """Read `n` snapshots from the dashboard's stream (the raw SSE lines): whole `snapshot`
    events, and `delta` events applied to the snapshot before (`apply_delta`, the page's rule);
    each event's kind goes to `kinds`."""
    state: dict[str, Any] | None = None
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        event = None
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: ") and event in ("snapshot", "delta"):
                data = json.loads(line[len("data: ") :])
                assert event == "snapshot" or state is not None, "a delta came first"
                state = data if event == "snapshot" else apply_delta(state, data)
                into.append(state)
                if kinds is not None:
                    kinds.append(event)
                if len(into) >= n:
                    return


async def test_one_reader_fans_out_and_stops_when_nobody_watches(stack: Stack) -> None:
    assert stack.http_url is not None
    url = f"{stack.http_url}/ui/api/events"
    first: list[dict[str, Any]] = []
    second: list[dict[str, Any]] = []
    kinds: list[str] = []
    a = asyncio.create_task(_read_events(url, 4, first, kinds))
    await asyncio.sleep(1.2)
    await asyncio.wait_for(asyncio.gather(a, _read_events(url, 2, second)), 30)
    seqs_a = [s["feed"]["seq"] for s in first]
    seqs_b = [s["feed"]["seq"] for s in second]
    assert seqs_a == sorted(set(seqs_a)), "each snapshot is sent once, in order"
    shared = set(seqs_a) & set(seqs_b)
    assert shared, "both browsers got the same reads"
    for seq in shared:  # one read, the same snapshot for both
        assert next(s for s in first if s["feed"]["seq"] == seq) == next(
            s for s in second if s["feed"]["seq"] == seq
        )
    assert max(s["feed"]["subscribers"] for s in second) == 2
    # a whole snapshot first, then deltas (only what changed), which rebuild the same snapshots
    assert kinds[0] == "snapshot" and "delta" in kinds[1:], kinds
    last = max(seqs_a + seqs_b)
    await asyncio.sleep(3.0)  # nobody watching: the reader stops
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{stack.http_url}/ui/api/snapshot") as resp:
            assert resp.status == 200
            snap = await resp.json()
        assert snap["feed"]["seq"] <= last + 2, "the reader kept polling with nobody watching"
        assert snap["feed"]["subscribers"] == 1
        async with session.get(f"{stack.http_url}/ui") as resp:  # redirected to the page
            assert resp.status == 200 and "assets/dashboard.js" in await resp.text()
        async with session.get(f"{stack.http_url}/ui/assets/dashboard.js") as resp:
            assert resp.status == 200
            assert resp.headers["content-type"].startswith("text/javascript")
        async with session.get(f"{stack.http_url}/ui/assets/..%2Fapi%2Fsnapshot") as resp:
            assert resp.status == 404


DATA_ROUTES = ("/ui/api/snapshot", "/ui/api/events", "/ui/api/session")


async def test_keyed_dashboard_refuses_without_a_valid_session_or_key(stack: Stack) -> None:
    url = KEYED["url"]
    expired = await SessionSigner({KEY: "default"}, 60).issue(KEY, now=time.time() - 120)
    # signed the way every replica with this key file signs: the keyed frontend accepts it
    fresh = await SessionSigner({KEY: "default"}, 60).issue(KEY)
    assert expired is not None and fresh is not None
    async with httpx.AsyncClient(base_url=url, timeout=10) as h:
        login = await h.post("/ui/login", data={"key": KEY})
        assert login.status_code == 303 and login.headers["location"] == "./"
        cookie = login.cookies[SESSION_COOKIE]
        assert KEY not in cookie
        set_cookie = login.headers["set-cookie"].lower()
        for attr in ("httponly", "samesite=strict", "path=/ui", "max-age="):
            assert attr in set_cookie, set_cookie
        assert "secure" not in set_cookie  # plain http here; behind an https proxy it is set
        proxied = await h.post(
            "/ui/login", data={"key": KEY}, headers={"X-Forwarded-Proto": "https"}
        )
        assert "; secure" in proxied.headers["set-cookie"].lower()
        h.cookies.clear()
        tenant = cookie.split(":")[1]  # forged: another tenant under the same signature
        forged = cookie.replace(f"v1:{tenant}:", "v1:tenant-b:", 1)
        refused: list[dict[str, str]] = [
            {},
            {"Authorization": f"Bearer {KEY}x"},
            {"Authorization": f"Basic {KEY}"},
            {"Cookie": f"{SESSION_COOKIE}={KEY}"},  # the raw key is no session
            {"Cookie": f"{SESSION_COOKIE}={forged}"},
            {"Cookie": f"{SESSION_COOKIE}={expired[0]}"},
            {"Cookie": f"{SESSION_COOKIE}={cookie[:-1]}0"},
        ]
        for headers in refused:
            for route in DATA_ROUTES:
                r = await h.get(route, headers=headers)
                assert r.status_code == 401, (route, headers, r.text)
                assert r.json()["error"]["code"] == "invalid_api_key"
            page = await h.get("/ui/", headers=headers)
            assert page.status_code == 303 and page.headers["location"] == "login"
        accepted = [
            ({"Cookie": f"{SESSION_COOKIE}={cookie}"}, "cookie", "default"),
            ({"Cookie": f"{SESSION_COOKIE}={fresh[0]}"}, "cookie", "default"),
            ({"Authorization": f"Bearer {KEY}"}, "bearer", "default"),
            ({"Authorization": f"Bearer {OTHER_KEY}"}, "bearer", "tenant-b"),
        ]
        for headers, via, who in accepted:
            r = await h.get("/ui/api/session", headers=headers)
            assert r.status_code == 200, r.text
            assert r.json()["via"] == via and r.json()["tenant"] == who and r.json()["auth"]
            assert (await h.get("/ui/api/snapshot", headers=headers)).status_code == 200
            page = await h.get("/ui/", headers=headers)
            assert page.status_code == 200 and "assets/dashboard.js" in page.text
        # the built assets stay open: the same bytes every installation ships, no data
        assert (await h.get("/ui/assets/dashboard.js")).status_code == 200
        logout = await h.post("/ui/logout", headers={"Cookie": f"{SESSION_COOKIE}={cookie}"})
        assert logout.status_code == 303 and logout.headers["location"] == "login"
        assert "max-age=0" in logout.headers["set-cookie"].lower()
        wrong = await h.post("/ui/login", data={"key": OTHER_KEY + "x"})
        assert wrong.status_code == 401 and 'id="login-error"' in wrong.text
        assert SESSION_COOKIE not in wrong.cookies
    for line in (
        "dashboard login refused: unknown API key",
        "dashboard request without a valid session or API key refused",
    ):
        await poll_until(
            lambda line=line: line in stack.logs("frontend-keyed"), within_s=10, what=line
        )


async def test_open_dashboard_needs_no_login(stack: Stack) -> None:
    assert stack.http_url is not None
    async with httpx.AsyncClient(base_url=stack.http_url, timeout=10) as h:
        page = await h.get("/ui/")
        assert page.status_code == 200 and "assets/dashboard.js" in page.text
        who = await h.get("/ui/api/session")
        assert who.json() == {
            "auth": False,
            "tenant": None,
            "via": "open",
            "expires": None,
            "scope": None,
        }
        for method in ("GET", "POST"):  # nothing to log into
            r = await h.request(method, "/ui/login", data={"key": "anything-at-all-here"})
            assert r.status_code == 303 and r.headers["location"] == "./"
            assert "set-cookie" not in r.headers


_form_text = st.text(st.characters(codec="utf-8"), max_size=300)
_bodies = st.one_of(
    st.binary(max_size=600),
    _form_text.map(str.encode),
    st.dictionaries(st.sampled_from(["key", "Key", "k", "key[]", ""]), _form_text, max_size=3).map(
        lambda d: urlencode(d).encode()
    ),
    st.builds(lambda k: urlencode({"key": k}).encode(), st.sampled_from([KEY, KEY + " "])),
    st.integers(4000, 6000).map(lambda n: b"key=" + b"a" * n),
)
_types = st.sampled_from(
    [
        "application/x-www-form-urlencoded",
        "application/x-www-form-urlencoded; charset=utf-8",
        "multipart/form-data; boundary=x",
        "application/json",
        "text/plain",
        "",
    ]
)
_cookies = st.one_of(
    st.just(""), st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=200)
)


def test_login_form_fuzz_never_500(stack: Stack) -> None:
    """Random bodies, content types and cookies at the login form: only 303 (a valid key),
    400 (not a form with one key) or 401 (a wrong key), never a 500; the other routes alike."""
    with httpx.Client(base_url=KEYED["url"], timeout=10) as h:

        @fuzz_settings(120)
        @given(body=_bodies, content_type=_types, cookie=_cookies)
        def one(body: bytes, content_type: str, cookie: str) -> None:
            headers = {"Content-Type": content_type} if content_type else {}
            if cookie:
                headers["Cookie"] = f"{SESSION_COOKIE}={cookie}"
            h.cookies.clear()
            r = h.post("/ui/login", content=body, headers=headers)
            assert r.status_code in (303, 400, 401), (r.status_code, r.text[:300])
            if r.status_code == 303:
                assert SESSION_COOKIE in r.cookies and r.headers["location"] == "./"
            else:
                assert 'id="login"' in r.text and SESSION_COOKIE not in r.cookies
            h.cookies.clear()
            for route in ("/ui/login", "/ui/api/session", "/ui/"):
                got = h.get(route, headers=headers).status_code
                assert got in (200, 303, 401), (route, got)

        one()


def _call_id(ms_ago: int, now_ms: int, n: int) -> str:
    """A call id as the frontend makes them (`store.accept.new_call_id`), `ms_ago` in the past."""
    return f"c-{now_ms - ms_ago:012x}{n:016x}"


async def test_window_queries_are_bounded_and_keep_unfinished_calls(
    make_database: Callable[..., str],
) -> None:
    db = make_database()
    pool = await create_pool(db, max_size=2)
    try:
        now_ms = int(await pool.fetchval("SELECT EXTRACT(EPOCH FROM now()) * 1000"))
        await pool.execute("INSERT INTO programs (id) VALUES ('q-old'), ('q-new')")
        rows = [
            # accepted 20 minutes ago: finished is out of the window, still running is shown
            (_call_id(1_200_000, now_ms, 1), "q-old", "finished", "e1"),
            (_call_id(1_200_000, now_ms, 2), "q-old", "running", "e1"),
            *((_call_id(10_000 - i, now_ms, 10 + i), "q-new", "finished", "e2") for i in range(5)),
            (_call_id(5_000, now_ms, 30), "q-new", "preempted", "e2"),
        ]
        await pool.executemany(
            """INSERT INTO calls (id, program_id, thread_id, status, engine_id, reply_to, request,
                                  parent_ids)
               VALUES ($1, $2, 'main', $3, $4, '_INBOX.x', '{}'::jsonb, '{}')""",
            rows,
        )
        kinds = ("preempt", "dispatch", "finish")
        await pool.executemany(
            "INSERT INTO call_events (call_id, kind) VALUES ($1, $2)",
            [(rows[-1][0], k) for k in kinds],
        )
        window = await read_window(pool, WindowLimits(window_s=60, max_calls=4))
        ids = [c["id"] for c in window.calls]
        newest = sorted(r[0] for r in rows if r[1] == "q-new")[-4:]
        assert window.calls_truncated  # 6 calls in the window, 4 allowed
        assert ids == sorted([rows[1][0], *newest])  # the old running one, and the newest four
        assert rows[0][0] not in ids
        assert [e["kind"] for e in window.events] == ["preempt"]  # only what is drawn
        assert sorted(p["id"] for p in window.programs) == ["q-new", "q-old"]
        depth = {(d["engine_id"], d["status"]): d["n"] for d in window.depth}
        assert depth == {("e1", "running"): 1, ("e2", "preempted"): 1}
        with pytest.raises(Exception, match="read-only"):  # the snapshot cannot write
            async with pool.acquire() as c, c.transaction(readonly=True):
                await c.execute("DELETE FROM calls")
    finally:
        await pool.close()
