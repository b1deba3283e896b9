"""The dashboard's login: a form where the operator pastes an API key, and logout.

Why a form and not Basic auth or a key in the URL: a key in a URL lands in browser history and
proxy logs, and Basic auth has no logout. The form posts the key once; a valid one gets the
session cookie (`ui_session.py`: HttpOnly, SameSite=Strict, Secure over https, Path=/ui) and a
303 to the dashboard; a wrong one gets the form again with 401 and a log line; anything that is
not a form with one `key` field is 400. The page is rendered here (no script, nothing loaded),
under a Content-Security-Policy that allows nothing but its own inline style and posting to
itself, and refuses to be framed.

Routes (added to the dashboard's router, `ui.py`): `GET /ui/login`, `POST /ui/login`,
`POST /ui/logout`. Without API keys there is nothing to log into: all three redirect to the page.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from autellix.services.frontend.ui_session import COOKIE, COOKIE_PATH, SessionSigner, is_https

#: a pasted key is at most 256 characters (`autellix.runtime.api_keys`): a larger form is no login
MAX_FORM_BYTES = 4096
_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}

_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Autellix dashboard: log in</title>
  <style>
    body {{ font: 15px/1.4 system-ui, sans-serif; background: #f4f5f7; color: #1d2330;
           display: flex; justify-content: center; padding-top: 12vh; margin: 0; }}
    form {{ background: #fff; padding: 28px 32px; border-radius: 8px; width: 380px;
           box-shadow: 0 1px 4px rgba(0,0,0,.12); }}
    h1 {{ font-size: 20px; margin: 0 0 6px; }}
    p {{ margin: 6px 0 14px; color: #4a5263; }}
    input {{ width: 100%; box-sizing: border-box; padding: 8px; font: 14px monospace;
            border: 1px solid #b8bfcc; border-radius: 4px; }}
    button {{ margin-top: 14px; padding: 8px 18px; font-size: 14px; border: 0;
             border-radius: 4px; background: #2f5bd3; color: #fff; cursor: pointer; }}
    .error {{ color: #b3261e; font-weight: 600; }}
  </style>
</head>
<body>
  <form id="login" method="post" action="login">
    <h1>Autellix dashboard</h1>
    <p>Paste an API key of this deployment: a key from the frontend's key file
       (<code>--api-key-file</code>; <code>autellix up</code> writes one).</p>
    {message}
    <input id="key" name="key" type="password" autocomplete="current-password"
           placeholder="API key" required autofocus>
    <button type="submit">Log in</button>
  </form>
</body>
</html>
"""


def login_page(message: str = "", status: int = 200) -> HTMLResponse:
    """The form, with an error message (escaped) when there is one."""
    note = f'<p class="error" id="login-error">{html.escape(message)}</p>' if message else ""
    return HTMLResponse(_PAGE.format(message=note), status_code=status, headers=_HEADERS)


def _form_key(body: bytes, content_type: str) -> str | None:
    """The `key` field of a urlencoded form body; None when the body is not such a form."""
    if content_type.split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
        return None
    try:
        fields = parse_qs(
            body.decode("utf-8"), keep_blank_values=True, strict_parsing=True, max_num_fields=8
        )
    except (UnicodeDecodeError, ValueError):
        return None
    values = fields.get("key")
    if values is None or len(values) != 1:
        return None
    return values[0].strip()


async def _body(request: Request, limit: int) -> bytes | None:
    """The request body, or None once it passes `limit` bytes (not read any further)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def add_login_routes(
    router: APIRouter, signer: Callable[[], SessionSigner | None], log: Callable[[], Any]
) -> None:
    """`/login` and `/logout` on the dashboard's router; `signer()` None: the API is open."""

    def to_page() -> Response:
        return RedirectResponse("./", status_code=303)

    @router.get("/login")
    async def login_form(request: Request) -> Any:
        s = signer()
        if s is None or await s.check(request.cookies.get(COOKIE)) is not None:
            return to_page()
        return login_page()

    @router.post("/login")
    async def login(request: Request) -> Any:
        s = signer()
        if s is None:
            return to_page()
        body = await _body(request, MAX_FORM_BYTES)
        key = None if body is None else _form_key(body, request.headers.get("content-type", ""))
        if not key:
            log().warning(
                "dashboard login refused: not a form with one key field",
                client=request.client.host if request.client else None,
                content_type=request.headers.get("content-type"),
                too_large=body is None,
            )
            return login_page("Send the form with one API key.", 400)
        issued = await s.issue(key)
        if issued is None:
            log().warning(
                "dashboard login refused: unknown API key",
                client=request.client.host if request.client else None,
            )
            return login_page("That key is not one of this deployment's API keys.", 401)
        value, tenant, expires = issued
        log().info("dashboard login", tenant=tenant, expires=expires)
        response = to_page()
        response.set_cookie(
            COOKIE,
            value,
            max_age=int(s.lifetime_s),
            path=COOKIE_PATH,
            secure=is_https(request.scope, request.headers),
            httponly=True,
            samesite="strict",
        )
        response.headers["Cache-Control"] = "no-store"
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Any:
        if signer() is None:
            return to_page()
        response = RedirectResponse("login", status_code=303)
        response.delete_cookie(
            COOKIE,
            path=COOKIE_PATH,
            secure=is_https(request.scope, request.headers),
            httponly=True,
            samesite="strict",
        )
        return response
