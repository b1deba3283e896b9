"""OpenAI-compatible HTTP API, served by the frontend process when it gets `--http-port`.

Endpoints: `POST /v1/chat/completions` and `POST /v1/completions` (JSON, or server-sent events
with `stream: true`), `GET /v1/models`, `GET /health`, `POST /v1/programs` and
`POST /v1/programs/{id}/close` (open/close an agent program explicitly),
`POST /v1/programs/{id}/cancel` (cancel every unfinished call of a program), `GET /metrics`
(Prometheus text: the `autellix:` series always, the OpenTelemetry ones when that exporter is
on) and `GET /openapi.json` (committed as docs/openapi.json).

How a request becomes a call, with no extra hop: the frontend's own admission code
(`accept.accept_call`: validate, register in Postgres, enqueue in JetStream) runs in this process;
its first answer (accepted, or a typed error → an HTTP 4xx/5xx) is handed over in-process. The
engine then streams deltas and the final to a reply subject under this process's own inbox
prefix, which one wildcard subscription (`ReplyRouter`) routes to the waiting request, exactly
as the Python client consumes its replies. Deltas are de-duplicated by offset, so a call that
moved to another engine after a failure still streams each token once.

Programs: `X-Autellix-Program-Id`, `X-Autellix-Thread-Id` and `X-Autellix-Parent-Ids` (comma
separated call ids) headers, or the body fields `program_id`, `thread_id`, `parent_ids`
(`extra_body=` in the OpenAI SDKs); a conflict between the two is a 400. A request without a
program id is a one-call program of its own, closed when the call ends. `Idempotency-Key` (or
`client_call_id`) makes a retried request return the first one's result instead of running again.

Tenants: with API keys (`--api-key-file`) a program belongs to the tenant whose key opened it
(explicitly, or by its first call). A request of another tenant naming it (a call in it, close,
cancel) is answered 404 `program_not_found`, the same answer as for a program that does not
exist, and each tenant's unfinished calls are bounded (`--max-unfinished-calls-per-tenant`: 429
past it, other tenants still admitted).

Text: engines with a tokenizer send text with their tokens. An engine without one (vLLM with
dummy weights) sends token ids only; the API then renders each token as `<|id|>` and sets
`autellix.text_is_placeholder`. Such an engine needs token-id prompts: `/v1/completions` with
`prompt` as a list of ints. The simulated engine estimates tokens from text (about 4 characters
a token) and answers with pseudo-words, so text prompts work on it.

Tracing: the request continues the W3C `traceparent` it carries; without one it joins its
program's trace (see `autellix.runtime.telemetry`). Each request is one `chat <model>` /
`text_completion <model>` server span with OTel GenAI attributes, parent of the frontend's
`autellix.accept`, whose context travels on to the scheduler and the engine.

Modules: this one is the ASGI app (routes, OpenAPI); `http_sse.py` streams answers as server-sent
events; `http_body_limit.py` caps request bodies; `http_outage.py` answers 503 `unavailable`
for a route that met a Postgres outage; `http_requests.py` turns request bodies into
protocol calls, `http_calls.py` runs them and turns answers back; `http_errors.py` is the error
shape; `http_server.py` serves the app in the frontend process.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from opentelemetry.trace import SpanKind
from starlette.exceptions import HTTPException as StarletteHTTPException

from autellix.client import CallFailed
from autellix.runtime import telemetry
from autellix.services.frontend import openai_schema as oa
from autellix.services.frontend.accept import close_program, open_program
from autellix.services.frontend.cancel import cancel_program
from autellix.services.frontend.http_calls import (
    CallRun,
    chat_choice,
    openai_finish_reason,
    openai_usage,
    outcome_label,
    result_unless_disconnected,
)
from autellix.services.frontend.http_errors import ApiError, program_not_found, request_tenant
from autellix.services.frontend.http_fanout import fan_out
from autellix.services.frontend.http_logprobs import completion_logprobs
from autellix.services.frontend.http_outage import OutageAnswers
from autellix.services.frontend.http_requests import build_call, output_plan
from autellix.services.frontend.http_sse import (
    CLIENT_GONE,
    chat_stream,
    completion_stream,
    gone_error,
)
from autellix.services.frontend.metrics import frontend_metrics, prometheus_page
from autellix.services.frontend.tracing import program_telemetry
from autellix.services.frontend.ui import dashboard_router
from autellix.store.programs import new_program_id, owned_by_another
from autellix.wire.protocol import (
    CallError,
    EngineHeartbeat,
    ProgramCancel,
    ProgramClose,
    ProgramOpen,
    validate_model,
)

# --------------------------------------------------------------------------- the app


def _error_json(err: ApiError) -> Any:
    return JSONResponse(err.body.model_dump(), status_code=err.status, headers=err.headers)


_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": oa.ErrorResponse, "description": "bad input (the message names the problem)"},
    413: {
        "model": oa.ErrorResponse,
        "description": "request body, or the call's messages, larger than the bus carries",
    },
    429: {
        "model": oa.ErrorResponse,
        "description": "overloaded: too many unfinished calls; retry after `Retry-After` seconds",
        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
    },
    503: {"model": oa.ErrorResponse, "description": "no engine, or the backend is unavailable"},
}
_MODEL_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {
        "model": oa.ErrorResponse,
        "description": "model_not_found: no engine serves `model`; program_not_found: the "
        "program id names another tenant's program",
    },
}
_PROGRAM_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {
        "model": oa.ErrorResponse,
        "description": "program_not_found: no such program, or another tenant's (the same answer)",
    },
}


def create_app(gateway: Any) -> Any:
    """The FastAPI app. `gateway=None` builds it for the OpenAPI document only."""
    app = FastAPI(
        title="Autellix OpenAI-compatible API",
        version="1.0.0",
        description=(__doc__ or "").split("\n\nModules:")[0].split("\n\n", 1)[1].strip(),
        docs_url="/docs",
        redoc_url=None,
    )

    if gateway is not None:
        app.add_middleware(OutageAnswers, log=gateway.log)

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> Any:
        return _error_json(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> Any:
        problems = []
        for e in exc.errors()[:5]:
            loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
            problems.append(f"{loc or '<body>'}: {e.get('msg')}")
        first = exc.errors()[0] if exc.errors() else {}
        param = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or None
        return _error_json(ApiError(400, "invalid request: " + "; ".join(problems), param=param))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Any:
        if exc.status_code == 404:
            message = f"no such endpoint: {request.method} {request.url.path}"
        else:
            message = str(exc.detail)
        return _error_json(ApiError(exc.status_code, message))

    def gw() -> Any:
        if gateway is None or gateway.ctx is None:
            raise ApiError(503, "not serving", type="server_error")
        return gateway

    async def not_found(g: Any, program_id: str, tenant: str | None, route: str) -> ApiError:
        """The 404 for an unknown program; logged when it is another tenant's (that read runs
        for either, so the answer's timing does not tell them apart)."""
        if tenant is not None and await owned_by_another(g.ctx.pool, program_id, tenant):
            g.log.warning(
                "request for another tenant's program answered as unknown",
                route=route,
                program_id=program_id,
                tenant=tenant,
            )
        return program_not_found(program_id)

    @app.get("/health", response_model=oa.Health, responses={503: {"model": oa.Health}})
    async def health() -> Any:
        g = gw()
        connected = bool(g.nc is not None and g.nc.is_connected)
        live = g.engines.live() if g.engines else []
        body = oa.Health(
            status="ok" if connected else "degraded",
            nats="connected" if connected else "disconnected",
            engines=len(live),
            models=sorted({name for hb in live for name in hb.names()}),
        )
        return JSONResponse(body.model_dump(), status_code=200 if connected else 503)

    @app.get("/v1/models", response_model=oa.ModelList)
    async def models() -> oa.ModelList:
        g = gw()
        by_model: dict[str, list[EngineHeartbeat]] = {}
        for hb in g.engines.live():
            for name in hb.names():  # the engine's --served-model-name(s)
                by_model.setdefault(name, []).append(hb)
        now = int(time.time())
        return oa.ModelList(
            data=[
                oa.ModelCard(
                    id=model,
                    created=now,
                    engines=sorted(h.engine_id for h in hbs),
                    backends=sorted({h.backend for h in hbs}),
                )
                for model, hbs in sorted(by_model.items())
            ]
        )

    @app.get("/v1/models/{model_id:path}", response_model=oa.ModelCard, responses={404: {}})
    async def model(model_id: str) -> oa.ModelCard:
        listed = await models()
        for card in listed.data:
            if card.id == model_id:
                return card
        raise ApiError(
            404, f"model {model_id!r} is not served by any live engine", code="model_not_found"
        )

    if gateway is not None:
        frontend_metrics().watch_engines(lambda: gateway.engines.live() if gateway.engines else [])

    @app.get("/metrics", response_class=Response)
    async def metrics() -> Any:
        """Prometheus exposition: the `autellix:` series, then the OpenTelemetry instruments'
        (when started with `OTEL_METRICS_EXPORTER=prometheus`)."""
        body, content_type = prometheus_page(telemetry.prometheus_text())
        return Response(content=body, media_type=content_type)

    @app.post(
        "/v1/programs",
        response_model=oa.ProgramOut,
        responses={**_ERROR_RESPONSES, **_PROGRAM_NOT_FOUND},
    )
    async def open_program_route(body: oa.ProgramOpenBody, request: Request) -> Any:
        """Open an agent program (session) explicitly; its id goes in X-Autellix-Program-Id.
        With API keys it belongs to the key's tenant: naming another tenant's is a 404."""
        g = gw()
        parsed = validate_model(ProgramOpen, body.model_dump(exclude_none=True))
        if isinstance(parsed, CallError):
            raise ApiError.from_call_error(parsed)
        tenant = request_tenant(request)
        reply = await open_program(g.ctx, parsed, tenant)
        if isinstance(reply, CallError):
            raise await not_found(g, parsed.program_id or "", tenant, "open")
        if reply.status != "open":
            raise ApiError(400, f"program {reply.program_id} is closed", code="program_closed")
        return reply.model_dump(exclude={"type"})

    @app.post(
        "/v1/programs/{program_id}/close",
        response_model=oa.ProgramOut,
        responses={**_ERROR_RESPONSES, **_PROGRAM_NOT_FOUND},
    )
    async def close_program_route(program_id: str, request: Request) -> Any:
        """Close a program; answers its final statistics and ends its trace."""
        g = gw()
        parsed = validate_model(ProgramClose, {"program_id": program_id})
        if isinstance(parsed, CallError):
            raise ApiError.from_call_error(parsed)
        tenant = request_tenant(request)
        reply = await close_program(g.ctx, parsed, tenant)
        if isinstance(reply, CallError):
            raise await not_found(g, program_id, tenant, "close")
        try:
            await program_telemetry().closed(g.ctx.pool, reply, dict(request.headers))
        except Exception as exc:
            g.log.warning("program telemetry failed", error=repr(exc))
        return reply.model_dump(exclude={"type"})

    @app.post(
        "/v1/programs/{program_id}/cancel",
        response_model=oa.ProgramCancelOut,
        responses={**_ERROR_RESPONSES, **_PROGRAM_NOT_FOUND},
    )
    async def cancel_program_route(
        program_id: str, request: Request, body: oa.ProgramCancelBody | None = None
    ) -> Any:
        """Cancel every unfinished call of a program (queued or running, on any engine): each
        is answered `cancelled` and its engine frees its slot. `close` closes it first."""
        g = gw()
        fields = (body or oa.ProgramCancelBody()).model_dump()
        parsed = validate_model(ProgramCancel, {"program_id": program_id, **fields})
        if isinstance(parsed, CallError):
            raise ApiError.from_call_error(parsed)
        tenant = request_tenant(request)
        reply = await cancel_program(g.ctx, g.nc, parsed, tenant)
        if isinstance(reply, CallError):
            raise await not_found(g, program_id, tenant, "cancel")
        return reply.model_dump(exclude={"type"})

    async def run_call(
        request: Request,
        body: oa.ChatCompletionRequest | oa.CompletionRequest,
        operation: str,
    ) -> Any:
        g = gw()
        started_ns = time.time_ns()
        parser = getattr(g, "tool_call_parser", None)
        call, one_call = build_call(body, request.headers, parser)
        carrier = dict(request.headers)
        sp = telemetry.start_span(
            f"{operation} {body.model}",
            telemetry.parent_context(carrier, call.program_id),
            kind=SpanKind.SERVER,
            program_id=call.program_id,
            thread_id=call.thread_id,
            **{
                "gen_ai.operation.name": operation,
                "gen_ai.provider.name": "autellix",
                "gen_ai.conversation.id": call.program_id,
                "gen_ai.request.model": body.model,
                "gen_ai.request.max_tokens": call.sampling.max_tokens,
                "gen_ai.request.temperature": call.sampling.temperature,
                "gen_ai.request.top_p": call.sampling.top_p,
                "gen_ai.request.seed": call.sampling.seed,
                "gen_ai.request.stream": bool(body.stream),
                "http.request.method": request.method,
                "http.route": request.url.path,
            },
        )
        run = CallRun(g, call, g.call_timeout_s, tenant=request_tenant(request))
        if isinstance(body, oa.ChatCompletionRequest):
            run.plan = output_plan(body, parser)

        def finished(status: int, error: CallError | ApiError | None = None) -> None:
            f = run.final
            attrs: dict[str, Any] = {"http.response.status_code": status}
            if run.accepted is not None:
                attrs["call_id"] = run.accepted.call_id
                attrs["gen_ai.response.id"] = run.accepted.call_id
            if f is not None:
                attrs.update(
                    {
                        "gen_ai.response.model": f.engine.model,
                        "gen_ai.response.finish_reasons": [openai_finish_reason(f)],
                        "gen_ai.usage.input_tokens": f.usage.prompt_tokens,
                        "gen_ai.usage.output_tokens": f.usage.completion_tokens,
                        "gen_ai.usage.cache_read.input_tokens": f.usage.cached_tokens,
                        "engine_id": f.engine.engine_id,
                        "backend": f.engine.backend,
                        "level": f.level,
                        "preemptions": f.preemptions,
                    }
                )
            telemetry.set_attributes(sp, **attrs)
            if isinstance(error, CallError):
                telemetry.record_error(sp, error.code.value, error.message)
            elif isinstance(error, ApiError):
                telemetry.record_error(sp, error.body.error.code or "error", str(error))
            sp.end()
            if one_call and run.accepted is not None:
                g.spawn(g.close_one_call_program(call.program_id, started_ns, carrier))
            program_telemetry().call_answered("http", outcome_label(run, error))
            if f is not None:
                ttft = run.first_token_at - run.received_at if run.first_token_at else None
                frontend_metrics().call_finished(f, time.monotonic() - run.received_at, ttft)

        try:
            with (
                telemetry.use_span(sp),
                telemetry.span("autellix.accept", program_id=call.program_id, via="http"),
            ):
                await run.begin(telemetry.inject())
        except ApiError as exc:
            finished(exc.status, exc)
            raise
        out_headers = {
            "x-autellix-call-id": run.accepted.call_id if run.accepted else "",
            "x-autellix-program-id": call.program_id,
        }
        ctx = sp.get_span_context()
        if ctx.is_valid:
            out_headers["x-autellix-trace-id"] = format(ctx.trace_id, "032x")
        rid = ("chatcmpl-" if operation == "chat" else "cmpl-") + (
            run.accepted.call_id if run.accepted else ""
        )
        created = int(time.time())
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            gen = (
                chat_stream(run, rid, created, body.model, include_usage, finished)
                if operation == "chat"
                else completion_stream(run, rid, created, body.model, include_usage, finished)
            )
            return StreamingResponse(gen, media_type="text/event-stream", headers=out_headers)
        try:
            got = await result_unless_disconnected(run, request)
        except CallFailed as exc:
            api = ApiError.from_call_error(exc.error)
            finished(api.status, exc.error)
            return JSONResponse(
                api.body.model_dump(),
                status_code=api.status,
                headers={**out_headers, **api.headers},
            )
        except BaseException:  # the request task itself was cancelled (server shutdown, ...)
            if run.cancel_if_unfinished("HTTP request cancelled"):
                finished(CLIENT_GONE, gone_error(run))
            raise
        finally:
            run.close()
        if got is None:  # the client disconnected: nobody will read an answer
            run.cancel_if_unfinished("HTTP client disconnected")
            finished(CLIENT_GONE, gone_error(run))
            return Response(status_code=CLIENT_GONE)
        final = got
        text, is_placeholder = run.full_text()
        info = run.info(is_placeholder)
        lps = run.all_logprobs()
        if lps is None and call.sampling.logprobs is not None:
            g.log.info(
                "logprobs not known for every token (the call moved between engines): null",
                call_id=info.call_id,
            )
        finished(200)
        if operation == "chat":
            resp: Any = oa.ChatCompletion(
                id=rid,
                created=created,
                model=body.model,
                choices=[chat_choice(run.plan, text, final, lps)],
                usage=openai_usage(final),
                autellix=info,
            )
        else:
            resp = oa.Completion(
                id=rid,
                created=created,
                model=body.model,
                choices=[
                    oa.CompletionChoice(
                        text=text,
                        finish_reason=openai_finish_reason(final),  # type: ignore[arg-type]
                        logprobs=completion_logprobs(lps) if lps is not None else None,
                    )
                ],
                usage=openai_usage(final),
                autellix=info,
            )
        return JSONResponse(resp.model_dump(), headers=out_headers)

    async def run_choices(
        request: Request, body: oa.ChatCompletionRequest | oa.CompletionRequest, operation: str
    ) -> Any:
        if (body.n or 1) == 1:
            return await run_call(request, body, operation)
        g = gw()
        started_ns, carrier = time.time_ns(), dict(request.headers)

        def close(program_id: str) -> None:
            g.spawn(g.close_one_call_program(program_id, started_ns, carrier))

        return await fan_out(run_call, request, body, operation, new_program_id, close)

    @app.post(
        "/v1/chat/completions",
        response_model=oa.ChatCompletion,
        responses={
            **_ERROR_RESPONSES,
            **_MODEL_NOT_FOUND,
            200: {
                "description": "a chat completion, or with `stream: true` server-sent events of "
                "ChatCompletionChunk (`data: <json>`), ending with `data: [DONE]`",
                "content": {
                    "text/event-stream": {
                        "schema": {"$ref": "#/components/schemas/ChatCompletionChunk"}
                    }
                },
            },
        },
    )
    async def chat_completions(body: oa.ChatCompletionRequest, request: Request) -> Any:
        """OpenAI chat completions on Autellix: one call of an agent program (n calls for
        `n > 1`)."""
        return await run_choices(request, body, "chat")

    @app.post(
        "/v1/completions",
        response_model=oa.Completion,
        responses={
            **_ERROR_RESPONSES,
            **_MODEL_NOT_FOUND,
            200: {
                "description": "a completion, or with `stream: true` server-sent events of "
                "Completion chunks, ending with `data: [DONE]`",
                "content": {
                    "text/event-stream": {"schema": {"$ref": "#/components/schemas/Completion"}}
                },
            },
        },
    )
    async def completions(body: oa.CompletionRequest, request: Request) -> Any:
        """OpenAI (legacy) text completions; `prompt` may be token ids."""
        return await run_choices(request, body, "text_completion")

    app.include_router(dashboard_router(gateway))  # /ui: the live dashboard (ui.py)
    _extra_schemas(app, [oa.ChatCompletionChunk])
    return app


def _extra_schemas(app: Any, models: list[type[Any]]) -> None:
    """Add models only referenced from SSE descriptions to the OpenAPI components."""
    from pydantic.json_schema import models_json_schema

    base = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = base()
        _, defs = models_json_schema(
            [(m, "serialization") for m in models], ref_template="#/components/schemas/{model}"
        )
        comps = schema.setdefault("components", {}).setdefault("schemas", {})
        for name, s in defs.get("$defs", {}).items():
            comps.setdefault(name, s)
        # bad input is answered 400 in OpenAI's error shape, never FastAPI's 422
        for path in schema.get("paths", {}).values():
            for op in path.values():
                op.get("responses", {}).pop("422", None)
        for name in ("HTTPValidationError", "ValidationError"):
            comps.pop(name, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document (what `/openapi.json` serves), built without a running stack."""
    return create_app(None).openapi()


def render_openapi() -> str:
    return json.dumps(openapi_document(), indent=2, sort_keys=False) + "\n"


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/openapi.json")
    target.write_text(render_openapi())
    print(target)
