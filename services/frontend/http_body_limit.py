"""The HTTP API's checks before any route runs: body size (413) and JSON nesting depth (400).

Why a middleware and not a check in the routes: the limits must hold before the body is parsed
(FastAPI parses it before a route runs, and a deep document would build a deep object first),
and the size limit while it is read (a body without a Content-Length is cut off once it passes
the limit).

The limit is the NATS server's max_payload: a body larger than that cannot become a call whose
messages fit on the bus. A refused body is still read to its end (up to `DRAIN_LIMIT`, and
discarded) before the 413 is sent: a server that answers and closes while the client is still
sending makes the client's TCP stack see a reset, not the answer.
"""

from __future__ import annotations

from typing import Any

from autellix.services.frontend.http_errors import ApiError
from autellix.wire.protocol import MAX_JSON_DEPTH, json_too_deep

#: refused bodies are read (and dropped) up to this many bytes, so their clients get the 413;
#: beyond it the connection is closed, as a client sending that much is not waiting for answers
DRAIN_LIMIT = 256 * 1024 * 1024
_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})


class BodyLimit:
    """ASGI middleware: 413 (OpenAI error shape) for bodies over `limit` bytes, 400 for JSON
    bodies nested deeper than `MAX_JSON_DEPTH`; the body is read here and handed on whole."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") not in _WITH_BODY:
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await _drain(receive, 0)
            await self._answer(send, _too_large(int(length), self.limit))
            return
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.limit:
                if message.get("more_body", False):  # (the last part needs no draining)
                    await _drain(receive, seen)
                await self._answer(send, _too_large(seen, self.limit))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if json_too_deep(body):
            await self._answer(
                send, ApiError(400, f"JSON nests deeper than {MAX_JSON_DEPTH} levels")
            )
            return
        handed = False

        async def replay() -> Any:
            nonlocal handed
            if not handed:
                handed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: disconnects, for the streaming routes

        await self.app(scope, replay, send)

    async def _answer(self, send: Any, err: ApiError) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": err.status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": err.body.model_dump_json().encode()})


def _too_large(size: int, limit: int) -> ApiError:
    return ApiError(
        413,
        f"request body is {size} bytes or more; the limit is {limit} (the bus's max_payload)",
        code="request_too_large",
    )


async def _drain(receive: Any, seen: int) -> None:
    """Read the rest of a refused body (dropping it), up to `DRAIN_LIMIT` bytes."""
    while seen <= DRAIN_LIMIT:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return
        seen += len(message.get("body", b""))
