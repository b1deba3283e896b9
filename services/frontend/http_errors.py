"""HTTP answers in OpenAI's error shape: `ApiError`, and the HTTP status, type and code each
protocol `ErrorCode` maps to (`_HTTP_ERRORS`).

Every route, the API-key middleware, the body limit and the dashboard raise the same `ApiError`,
so a client sees one error shape whatever refused it. Tenants: `request_tenant` reads the tenant
`http_auth.ApiKeyAuth` put in a request's scope, and `program_not_found` is the one answer for a
program that does not exist and for another tenant's (no existence oracle).
"""

from __future__ import annotations

from typing import Any

from autellix.services.frontend import openai_schema as oa
from autellix.services.frontend.admission import RETRY_AFTER_S
from autellix.wire.protocol import CallError, ErrorCode

#: protocol error code → (HTTP status, OpenAI error type, OpenAI error code)
_HTTP_ERRORS: dict[ErrorCode, tuple[int, str, str]] = {
    ErrorCode.invalid_json: (400, "invalid_request_error", "invalid_json"),
    ErrorCode.validation_error: (400, "invalid_request_error", "invalid_value"),
    ErrorCode.unsupported_version: (400, "invalid_request_error", "unsupported_version"),
    ErrorCode.message_too_large: (413, "invalid_request_error", "request_too_large"),
    ErrorCode.prompt_too_long: (400, "invalid_request_error", "context_length_exceeded"),
    ErrorCode.program_closed: (400, "invalid_request_error", "program_closed"),
    ErrorCode.model_not_found: (404, "invalid_request_error", "model_not_found"),
    ErrorCode.no_tokenizer: (400, "invalid_request_error", "no_tokenizer"),
    ErrorCode.unsupported_on_backend: (400, "invalid_request_error", "unsupported_on_backend"),
    ErrorCode.cancelled: (400, "invalid_request_error", "cancelled"),
    ErrorCode.no_engine: (503, "server_error", "no_engine"),
    ErrorCode.overloaded: (429, "rate_limit_error", "overloaded"),
    ErrorCode.undeliverable: (502, "server_error", "undeliverable"),
    ErrorCode.engine_failed: (502, "server_error", "engine_failed"),
    ErrorCode.timeout: (504, "server_error", "timeout"),
    ErrorCode.unavailable: (503, "server_error", "unavailable"),
    ErrorCode.internal: (500, "server_error", "internal"),
}


class ApiError(Exception):
    """An answer in OpenAI's error shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.headers = dict(headers or {})
        self.body = oa.ErrorResponse(
            error=oa.ErrorBody(message=message, type=type, param=param, code=code)
        )

    @classmethod
    def from_call_error(cls, err: CallError) -> ApiError:
        status, kind, code = _HTTP_ERRORS.get(err.code, (500, "server_error", err.code.value))
        param = None
        if err.details:
            param = str(err.details[0].get("loc") or "") or None
        headers = {"Retry-After": str(RETRY_AFTER_S)} if status in (429, 503) else None
        return cls(status, err.message, type=kind, code=code, param=param, headers=headers)


def program_not_found(program_id: str) -> ApiError:
    """404 for a program that does not exist, and the very same for another tenant's."""
    return ApiError(404, f"unknown program {program_id}", code="program_not_found")


def request_tenant(request: Any) -> str | None:
    """The tenant `http_auth.ApiKeyAuth` put in the request's scope; None without API keys."""
    state = request.scope.get("state") or {}
    tenant = state.get("tenant") if isinstance(state, dict) else None
    return tenant if isinstance(tenant, str) else None
