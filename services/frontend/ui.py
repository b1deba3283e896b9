"""The live dashboard at `/ui`: the page, its built assets, and its server-sent event stream.

Served by the frontend's HTTP API on the same port, as one FastAPI router. Access follows the
API's: without API keys (`--api-key-file` not given) everything here is open, as the API is.
With keys, a browser logs in once with a key (`ui_login.py`) and gets a session cookie
(`ui_session.py`), since it cannot put a Bearer header on a page load or an `EventSource`; every
data route accepts that cookie or `Authorization: Bearer <key>` (scripts, `curl`) and answers
401 without either. What a valid session sees: every tenant's programs for the admin tenants
(`AUTELLIX_UI_ADMIN_TENANTS`, default `default`) and when there are no keys; only its own
tenant's programs and calls for any other key (`ui_scope.py`).

Routes (left out of the OpenAPI document: they are for people, not API clients):

* `GET /ui/` — the page (without a session: a 303 to `login`); `GET /ui/assets/<file>` — its
  script and styles, built from `ui/` (npm) into the package's `ui_static/`, so nothing is
  fetched from elsewhere at run time. The assets stay open: they are the same bytes every
  installation of this version ships, and hold no data of the deployment (the data comes only
  from the routes below);
* `GET /ui/api/events` — `text/event-stream`: one event per poll (`ui_feed.py`): a whole
  `snapshot` first, then a `delta` from the snapshot the stream already sent (the head, the ids
  of the calls in view, the calls that changed: `ui_encode.apply_delta`), a whole `snapshot`
  again after one was dropped for a slow reader or after an error;
* `GET /ui/api/snapshot` — the newest snapshot once, as JSON (scripts, `curl`);
* `GET /ui/api/session` — who is looking: `{"auth", "tenant", "via", "expires", "scope"}`
  (`scope`: null for everything, else the one tenant whose programs the snapshots hold);
* `GET|POST /ui/login`, `POST /ui/logout` — `ui_login.py`.

Every data route is read-only and reads only through the feed's single reader (`ui_feed.py`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.params import Depends as DependsParam
from fastapi.responses import FileResponse, RedirectResponse, Response, StreamingResponse

from autellix.services.frontend.http_errors import ApiError
from autellix.services.frontend.ui_feed import DashboardFeed, FeedConfig
from autellix.services.frontend.ui_login import add_login_routes
from autellix.services.frontend.ui_scope import admin_tenants, scope_of
from autellix.services.frontend.ui_session import (
    COOKIE,
    SessionSigner,
    Viewer,
    session_seconds,
    viewer,
)

#: the built page (see ui/README.md); shipped as package data
STATIC_DIR = Path(str(resources.files("autellix") / "ui_static"))

#: seconds between a stream's checks for shutdown, and between keep-alive comments
_WAKE_S = 0.5
_KEEPALIVE_S = 15.0
#: how long `/ui/api/snapshot` waits for the reader's next snapshot
_SNAPSHOT_WAIT_S = 10.0

_ASSET_TYPES = {".js": "text/javascript", ".css": "text/css", ".map": "application/json"}


def _assets() -> dict[str, Path]:
    """The files the page may load, by name (nothing else under the package is reachable)."""
    folder = STATIC_DIR / "assets"
    return {p.name: p for p in folder.iterdir() if p.is_file()} if folder.is_dir() else {}


def dashboard_router(gateway: Any, dependencies: Sequence[DependsParam] = ()) -> APIRouter:
    """The `/ui` routes for one HTTP gateway (`gateway=None`: routes only, for OpenAPI)."""
    router = APIRouter(prefix="/ui", include_in_schema=False, dependencies=list(dependencies))
    feeds: list[DashboardFeed] = []
    assets = _assets()
    keys = getattr(gateway, "api_keys", None)
    # read now, so a bad AUTELLIX_UI_SESSION_S stops the frontend at start, not at first login
    signer = None if keys is None else SessionSigner(keys, session_seconds())
    admins = admin_tenants()  # read now too: a bad value stops the frontend at start
    add_login_routes(router, lambda: signer, lambda: gateway.log)

    async def who(request: Request) -> Viewer | None:
        return await viewer(
            signer, request.headers.get("authorization"), request.cookies.get(COOKIE)
        )

    async def allowed(request: Request) -> Viewer:
        """The data routes' guard: a valid session cookie or Bearer key, else 401."""
        found = await who(request)
        if found is None:
            gateway.log.warning(
                "dashboard request without a valid session or API key refused",
                path=request.url.path,
                had_cookie=COOKIE in request.cookies,
                had_header="authorization" in request.headers,
            )
            raise ApiError(
                401,
                "log in at /ui/login, or send 'Authorization: Bearer <key>'",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return found

    signed_in = Depends(allowed)  # the data routes' viewer (an annotation could not name it)

    def feed() -> DashboardFeed:
        if gateway is None or gateway.ctx is None:
            raise ApiError(503, "not serving", type="server_error")
        if not feeds:
            feeds.append(DashboardFeed(gateway.ctx.pool, FeedConfig.from_env(), gateway.log))
        return feeds[0]

    @router.get("")
    async def to_page(request: Request) -> Any:
        return RedirectResponse(request.url.path + "/")

    @router.get("/")
    async def page(request: Request) -> Any:
        if await who(request) is None:
            return RedirectResponse("login", status_code=303)
        index = STATIC_DIR / "index.html"
        if not index.is_file():
            raise ApiError(404, "the dashboard is not built into this installation")
        return FileResponse(index, media_type="text/html", headers={"Cache-Control": "no-cache"})

    @router.get("/assets/{name}")
    async def asset(name: str) -> Any:
        path = assets.get(name)
        if path is None:
            raise ApiError(404, f"no such dashboard asset: {name}")
        media = _ASSET_TYPES.get(path.suffix, "application/octet-stream")
        # revalidated on every load (FileResponse answers with ETag / Last-Modified), so a
        # browser never runs an older script against a newer page after an upgrade
        return FileResponse(path, media_type=media, headers={"Cache-Control": "no-cache"})

    @router.get("/api/session")
    async def session(request: Request) -> Any:
        found = await allowed(request)
        return {
            "auth": signer is not None,
            "tenant": found.tenant,
            "via": found.via,
            "expires": found.expires,
            "scope": scope_of(found.tenant, admins),
        }

    @router.get("/api/snapshot")
    async def snapshot(found: Viewer = signed_in) -> Any:
        f = feed()
        sub = f.subscribe(scope_of(found.tenant, admins))
        try:
            got = await sub.next(_SNAPSHOT_WAIT_S)  # a new subscription: a whole snapshot
        finally:
            f.unsubscribe(sub)
        if got is None:
            raise ApiError(503, "no dashboard snapshot in time", type="server_error")
        return Response(got[1], media_type="application/json")

    @router.get("/api/events")
    async def events(found: Viewer = signed_in) -> Any:
        f = feed()
        scope = scope_of(found.tenant, admins)

        async def stream() -> AsyncIterator[str]:
            sub = f.subscribe(scope)  # here, not before: a stream never started never subscribes
            try:
                hello = json.dumps({"poll_s": f.config.poll_s})
                yield f"retry: 3000\nevent: hello\ndata: {hello}\n\n"
                quiet = 0.0
                while not gateway.stopping:  # a draining frontend closes its streams
                    got = await sub.next(_WAKE_S)
                    if got is not None:
                        quiet = 0.0
                        kind, data = got
                        yield f"event: {kind}\ndata: {data}\n\n"
                        continue
                    quiet += _WAKE_S
                    if quiet >= _KEEPALIVE_S:
                        quiet = 0.0
                        yield ": keep-alive\n\n"
            finally:
                f.unsubscribe(sub)

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return router
