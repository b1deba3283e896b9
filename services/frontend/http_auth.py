"""Bearer API keys on the HTTP API (``--api-key-file``): 401 in OpenAI's error shape without one.

Why an ASGI middleware: every ``/v1`` route is covered, including ones added later, before any
body is read. ``/health`` (load balancers) and ``/metrics`` (Prometheus scrapes) stay open, as
does the OpenAPI document; vLLM's ``--api-key`` protects ``/v1`` alike. The dashboard (``/ui``)
checks the same keys itself (``ui.py``), since a browser cannot send this header on a page load:
a login form trades a key for a session cookie. The key's tenant goes into the request's
``state`` (``tenant``).
"""

from __future__ import annotations

from typing import Any

from autellix.runtime.api_keys import tenant_of
from autellix.services.frontend.http_errors import ApiError

PROTECTED_PREFIX = "/v1"


class ApiKeyAuth:
    """ASGI middleware: a request under ``/v1`` needs ``Authorization: Bearer <known key>``."""

    def __init__(self, app: Any, keys: dict[str, str], log: Any) -> None:
        self.app = app
        self.keys = keys
        self.log = log

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (
            path == PROTECTED_PREFIX or path.startswith(PROTECTED_PREFIX + "/")
        ):
            await self.app(scope, receive, send)
            return
        header = None
        for name, value in scope.get("headers") or []:
            if name == b"authorization":
                header = value.decode("latin-1")
                break
        tenant = tenant_of(header, self.keys)
        if tenant is None:
            self.log.warning(
                "HTTP request without a valid API key refused",
                path=path,
                method=scope.get("method"),
                had_header=header is not None,
            )
            err = ApiError(
                401,
                "missing or unknown API key: send 'Authorization: Bearer <key>'",
                code="invalid_api_key",
            )
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"www-authenticate", b"Bearer"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": err.body.model_dump_json().encode()})
            return
        scope.setdefault("state", {})["tenant"] = tenant
        await self.app(scope, receive, send)
