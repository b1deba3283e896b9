"""OpenAI-compatible HTTP API, served by the frontend process when it gets `--http-port`.

Endpoints: `POST /v1/chat/completions` and `POST /v1/completions` (JSON, or server-sent events
with `stream: true`), `GET /v1/models`, `GET /health`, `POST /v1/programs` and
`POST /v1/programs/{id}/close` (open/close an agent program explicitly), `GET /metrics`
(Prometheus, when that exporter is on) and `GET /openapi.json` (committed as docs/openapi.json).

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

Text: engines with a tokenizer send text with their tokens. An engine without one (vLLM with
dummy weights) sends token ids only; the API then renders each token as `<|id|>` and sets
`autellix.text_is_placeholder`. Such an engine needs token-id prompts: `/v1/completions` with
`prompt` as a list of ints. The simulated engine estimates tokens from text (about 4 characters
a token) and answers with pseudo-words, so text prompts work on it.

Tracing: the request continues the W3C `traceparent` it carries; without one it joins its
program's trace (see `autellix.telemetry`). Each request is one `chat <model>` /
`text_completion <model>` server span with OTel GenAI attributes, parent of the frontend's
`autellix.accept`, whose context travels on to the scheduler and the engine.

Modules: this one is the ASGI app (routes, streams, body limit, OpenAPI); `http_calls.py` turns
requests into protocol calls and back; `http_server.py` serves the app in the frontend process.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from opentelemetry.trace import SpanKind
from starlette.exceptions import HTTPException as StarletteHTTPException

from autellix import telemetry
from autellix.client import CallFailed
from autellix.protocol import (
    MAX_MESSAGE_BYTES,
    CallError,
    EngineHeartbeat,
    ErrorCode,
    ProgramClose,
    ProgramOpen,
    validate_model,
)
from autellix.services.frontend import openai_schema as oa
from autellix.services.frontend.accept import close_program, open_program
from autellix.services.frontend.http_calls import (
    ApiError,
    CallRun,
    Piece,
    build_call,
    openai_finish_reason,
    openai_usage,
    outcome_label,
    result_unless_disconnected,
)
from autellix.services.frontend.tracing import program_telemetry


class BodyLimit:
    """ASGI middleware: refuse request bodies over `limit` bytes with 413 (OpenAI error shape)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await self._too_large(send, int(length))
            return
        seen = 0
        started = False

        async def limited_receive() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _BodyTooLarge(seen)
            return message

        async def watch_send(message: Any) -> None:
            nonlocal started
            started |= message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, watch_send)
        except _BodyTooLarge as exc:
            if not started:
                await self._too_large(send, exc.size)

    async def _too_large(self, send: Any, size: int) -> None:
        body = ApiError(
            413,
            f"request body is {size} bytes or more; the limit is {self.limit}",
            code="request_too_large",
        ).body.model_dump_json()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body.encode()})


class _BodyTooLarge(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


# --------------------------------------------------------------------------- the app


def _sse(obj: Any) -> str:
    data = obj.model_dump_json(exclude_none=False) if hasattr(obj, "model_dump_json") else obj
    if not isinstance(data, str):
        data = json.dumps(data)
    return f"data: {data}\n\n"


def _error_json(err: ApiError) -> Any:
    return JSONResponse(err.body.model_dump(), status_code=err.status)


_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": oa.ErrorResponse, "description": "bad input (the message names the problem)"},
    413: {"model": oa.ErrorResponse, "description": "request body too large"},
    503: {"model": oa.ErrorResponse, "description": "no engine, or the backend is unavailable"},
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

    @app.exception_handler(_BodyTooLarge)
    async def _too_large(_: Request, exc: _BodyTooLarge) -> Any:
        return _error_json(
            ApiError(413, f"request body over {MAX_MESSAGE_BYTES} bytes", code="request_too_large")
        )

    def gw() -> Any:
        if gateway is None or gateway.ctx is None:
            raise ApiError(503, "not serving", type="server_error")
        return gateway

    @app.get("/health", response_model=oa.Health, responses={503: {"model": oa.Health}})
    async def health() -> Any:
        g = gw()
        connected = bool(g.nc is not None and g.nc.is_connected)
        live = g.engines.live() if g.engines else []
        body = oa.Health(
            status="ok" if connected else "degraded",
            nats="connected" if connected else "disconnected",
            engines=len(live),
            models=sorted({hb.model for hb in live}),
        )
        return JSONResponse(body.model_dump(), status_code=200 if connected else 503)

    @app.get("/v1/models", response_model=oa.ModelList)
    async def models() -> oa.ModelList:
        g = gw()
        by_model: dict[str, list[EngineHeartbeat]] = {}
        for hb in g.engines.live():
            by_model.setdefault(hb.model, []).append(hb)
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

    @app.get("/metrics", response_class=Response, responses={404: {"model": oa.ErrorResponse}})
    async def metrics() -> Any:
        """Prometheus exposition (when started with `OTEL_METRICS_EXPORTER=prometheus`)."""
        text = telemetry.prometheus_text()
        if text is None:
            raise ApiError(
                404,
                "metrics are not exported in Prometheus format by this process "
                "(set OTEL_METRICS_EXPORTER=prometheus)",
                code="not_found",
            )
        return Response(content=text[0], media_type=text[1])

    @app.post("/v1/programs", response_model=oa.ProgramOut, responses=_ERROR_RESPONSES)
    async def open_program_route(body: oa.ProgramOpenBody) -> Any:
        """Open an agent program (session) explicitly; its id goes in X-Autellix-Program-Id."""
        g = gw()
        parsed = validate_model(ProgramOpen, body.model_dump(exclude_none=True))
        if isinstance(parsed, CallError):
            raise ApiError.from_call_error(parsed)
        reply = await open_program(g.ctx, parsed)
        if reply.status != "open":
            raise ApiError(400, f"program {reply.program_id} is closed", code="program_closed")
        return reply.model_dump(exclude={"type"})

    @app.post(
        "/v1/programs/{program_id}/close",
        response_model=oa.ProgramOut,
        responses={**_ERROR_RESPONSES, 404: {"model": oa.ErrorResponse}},
    )
    async def close_program_route(program_id: str, request: Request) -> Any:
        """Close a program; answers its final statistics and ends its trace."""
        g = gw()
        parsed = validate_model(ProgramClose, {"program_id": program_id})
        if isinstance(parsed, CallError):
            raise ApiError.from_call_error(parsed)
        reply = await close_program(g.ctx, parsed)
        if isinstance(reply, CallError):
            raise ApiError(404, reply.message, code="program_not_found")
        try:
            await program_telemetry().closed(g.ctx.pool, reply, dict(request.headers))
        except Exception as exc:
            g.log.warning("program telemetry failed", error=repr(exc))
        return reply.model_dump(exclude={"type"})

    async def run_call(
        request: Request,
        body: oa.ChatCompletionRequest | oa.CompletionRequest,
        operation: str,
    ) -> Any:
        g = gw()
        started_ns = time.time_ns()
        call, one_call = build_call(body, request.headers)
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
        run = CallRun(g, call, g.call_timeout_s)

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
                _chat_stream(run, rid, created, body.model, include_usage, finished)
                if operation == "chat"
                else _completion_stream(run, rid, created, body.model, include_usage, finished)
            )
            return StreamingResponse(gen, media_type="text/event-stream", headers=out_headers)
        try:
            got = await result_unless_disconnected(run, request)
        except CallFailed as exc:
            api = ApiError.from_call_error(exc.error)
            finished(api.status, exc.error)
            return JSONResponse(api.body.model_dump(), status_code=api.status, headers=out_headers)
        except BaseException:  # the request task itself was cancelled (server shutdown, ...)
            if run.cancel_if_unfinished("HTTP request cancelled"):
                finished(CLIENT_GONE, _gone(run))
            raise
        finally:
            run.close()
        if got is None:  # the client disconnected: nobody will read an answer
            run.cancel_if_unfinished("HTTP client disconnected")
            finished(CLIENT_GONE, _gone(run))
            return Response(status_code=CLIENT_GONE)
        final = got
        text, is_placeholder = run.full_text()
        info = run.info(is_placeholder)
        finished(200)
        if operation == "chat":
            resp: Any = oa.ChatCompletion(
                id=rid,
                created=created,
                model=body.model,
                choices=[
                    oa.ChatChoice(
                        message=oa.AssistantMessage(content=text),
                        finish_reason=openai_finish_reason(final),  # type: ignore[arg-type]
                    )
                ],
                usage=openai_usage(final),
                autellix=info,
            )
        else:
            resp = oa.Completion(
                id=rid,
                created=created,
                model=body.model,
                choices=[
                    oa.CompletionChoice(text=text, finish_reason=openai_finish_reason(final))  # type: ignore[arg-type]
                ],
                usage=openai_usage(final),
                autellix=info,
            )
        return JSONResponse(resp.model_dump(), headers=out_headers)

    @app.post(
        "/v1/chat/completions",
        response_model=oa.ChatCompletion,
        responses={
            **_ERROR_RESPONSES,
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
        """OpenAI chat completions on Autellix: one call of an agent program."""
        return await run_call(request, body, "chat")

    @app.post(
        "/v1/completions",
        response_model=oa.Completion,
        responses={
            **_ERROR_RESPONSES,
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
        return await run_call(request, body, "text_completion")

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


Finished = Callable[..., None]
CLIENT_GONE = 499  # nginx's "client closed request": what the span and the counter record


def _gone(run: CallRun) -> CallError:
    call_id = run.accepted.call_id if run.accepted else None
    return CallError(call_id=call_id, code=ErrorCode.cancelled, message="HTTP client went away")


async def _chat_stream(
    run: CallRun, rid: str, created: int, model: str, include_usage: bool, finished: Finished
) -> AsyncIterator[str]:
    def chunk(**kw: Any) -> oa.ChatCompletionChunk:
        return oa.ChatCompletionChunk(id=rid, created=created, model=model, **kw)

    status, error = 200, None
    try:
        yield _sse(
            chunk(choices=[oa.ChatChunkChoice(delta=oa.ChunkDelta(role="assistant", content=""))])
        )
        async for item in run.events():
            if isinstance(item, Piece):
                yield _sse(
                    chunk(choices=[oa.ChatChunkChoice(delta=oa.ChunkDelta(content=item.text))])
                )
            else:
                reason = openai_finish_reason(item)
                yield _sse(
                    chunk(
                        choices=[oa.ChatChunkChoice(delta=oa.ChunkDelta(), finish_reason=reason)],  # type: ignore[arg-type]
                        autellix=run.info(run.any_placeholder),
                    )
                )
                if include_usage:
                    yield _sse(chunk(choices=[], usage=openai_usage(item)))
        yield "data: [DONE]\n\n"
    except CallFailed as exc:
        api = ApiError.from_call_error(exc.error)
        status, error = api.status, exc.error
        yield _sse(api.body.model_dump())
    finally:
        run.close()
        # left before the answer: the client disconnected (Starlette cancels the stream) or
        # the generator was closed; the call is cancelled so it stops using the engine
        if run.cancel_if_unfinished("HTTP client disconnected from the stream"):
            status, error = CLIENT_GONE, _gone(run)
        finished(status, error)


async def _completion_stream(
    run: CallRun, rid: str, created: int, model: str, include_usage: bool, finished: Finished
) -> AsyncIterator[str]:
    def chunk(**kw: Any) -> oa.Completion:
        return oa.Completion(id=rid, created=created, model=model, **kw)

    status, error = 200, None
    try:
        async for item in run.events():
            if isinstance(item, Piece):
                yield _sse(chunk(choices=[oa.CompletionChoice(text=item.text)]))
            else:
                reason = openai_finish_reason(item)
                yield _sse(
                    chunk(
                        choices=[oa.CompletionChoice(text="", finish_reason=reason)],  # type: ignore[arg-type]
                        autellix=run.info(run.any_placeholder),
                    )
                )
                if include_usage:
                    yield _sse(chunk(choices=[], usage=openai_usage(item)))
        yield "data: [DONE]\n\n"
    except CallFailed as exc:
        api = ApiError.from_call_error(exc.error)
        status, error = api.status, exc.error
        yield _sse(api.body.model_dump())
    finally:
        run.close()
        # left before the answer: the client disconnected (Starlette cancels the stream) or
        # the generator was closed; the call is cancelled so it stops using the engine
        if run.cancel_if_unfinished("HTTP client disconnected from the stream"):
            status, error = CLIENT_GONE, _gone(run)
        finished(status, error)


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document (what `/openapi.json` serves), built without a running stack."""
    return create_app(None).openapi()


def render_openapi() -> str:
    return json.dumps(openapi_document(), indent=2, sort_keys=False) + "\n"


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/openapi.json")
    target.write_text(render_openapi())
    print(target)
