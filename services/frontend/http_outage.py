"""The HTTP API through a Postgres outage: 503 `unavailable` with Retry-After, never a bare 500.

Why a middleware: every route reads or writes Postgres (programs, calls, the dashboard's
session checks do not, the rest do), and a route that meets an outage raises whatever asyncpg
raised. Caught here, inside FastAPI's error middleware, such a request gets OpenAI's error shape
with the retryable code the NATS API answers too (`ErrorCode.unavailable`) and a warning line;
anything else still propagates as a bug (500 and its traceback). An answer already started (a
stream) cannot be changed, so an outage in the middle of one ends that stream as before.
"""

from __future__ import annotations

from typing import Any

from autellix.services.frontend.http_errors import ApiError
from autellix.store.db import db_unavailable
from autellix.wire.protocol import CallError, ErrorCode


class OutageAnswers:
    """ASGI middleware: a route that failed on a Postgres outage answers 503 `unavailable`."""

    def __init__(self, app: Any, log: Any) -> None:
        self.app = app
        self.log = log

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            if started or not db_unavailable(exc):
                raise
            self.log.warning(
                "HTTP request failed: database unavailable",
                path=scope.get("path"),
                method=scope.get("method"),
                error=repr(exc),
            )
            err = ApiError.from_call_error(
                CallError(
                    code=ErrorCode.unavailable,
                    message=f"database unavailable, retry: {exc!r}",
                    retryable=True,
                )
            )
            headers = [(b"content-type", b"application/json")]
            headers += [(k.lower().encode(), v.encode()) for k, v in err.headers.items()]
            await send({"type": "http.response.start", "status": err.status, "headers": headers})
            await send({"type": "http.response.body", "body": err.body.model_dump_json().encode()})
