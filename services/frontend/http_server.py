"""Serving the HTTP API inside the frontend process: uvicorn on the service's own event loop.

Why not `uvicorn.run`: the frontend process already runs an event loop (NATS, Postgres) and owns
SIGTERM (`service_runtime`), so the server runs as a task on that loop, with uvicorn's signal
handling switched off, and on a socket bound here (a busy port is then a clean start-up error of
the service instead of a `sys.exit` inside uvicorn). `FrontendWithHttp` is the frontend service
plus this gateway, as one service for `run_service`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable
from typing import Any

import uvicorn

from autellix.services.frontend.accept import FrontendContext, close_program
from autellix.services.frontend.http import create_app
from autellix.services.frontend.http_auth import ApiKeyAuth
from autellix.services.frontend.http_body_limit import BodyLimit
from autellix.services.frontend.http_replies import ReplyRouter
from autellix.services.frontend.live_engines import EngineDirectory
from autellix.services.frontend.tracing import program_telemetry
from autellix.wire.protocol import ProgramClose, ProgramReply


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the service runtime owns SIGTERM."""

    def install_signal_handlers(self) -> None:  # uvicorn < 0.29
        return None

    @contextlib.contextmanager
    def capture_signals(self) -> Any:  # uvicorn >= 0.29
        yield


class HttpGateway:
    """The HTTP face of one frontend process; shares its NATS connection and database pool."""

    def __init__(
        self,
        ctx: FrontendContext,
        nc: Any,
        log: Any,
        *,
        host: str = "127.0.0.1",
        port: int = 8000,
        call_timeout_s: float = 600.0,
        tool_call_parser: str | None = None,
        api_keys: dict[str, str] | None = None,
    ) -> None:
        self.ctx = ctx
        #: key -> tenant (`--api-key-file`); None: the HTTP API is open
        self.api_keys = api_keys
        #: tool-call parser for `tool_choice: auto` (None: chosen from each request's model)
        self.tool_call_parser = tool_call_parser
        self.nc = nc
        self.log = log
        self.host = host
        self.port = port
        self.call_timeout_s = call_timeout_s
        self.router: ReplyRouter = None  # type: ignore[assignment]
        self.engines: EngineDirectory = None  # type: ignore[assignment]
        self.app = create_app(self)
        self._server: Any = None
        self._task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        #: shutting down: requests cut off now are not the clients' choice, so their calls are
        #: not cancelled (a client may collect the answer again with its Idempotency-Key)
        self.stopping = False

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        self.router = ReplyRouter(self.nc, self.log)
        await self.router.start()
        # the NATS API's live-engine view (it starts and stops it): one rule for both faces
        assert self.ctx.engines is not None, "the frontend's NATS API starts the engine view"
        self.engines = self.ctx.engines
        # bind here, so a busy port is a start-up error of this service, not a sys.exit deep
        # inside uvicorn
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise RuntimeError(f"cannot serve HTTP on {self.host}:{self.port}: {exc}") from exc
        sock.listen(2048)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        app: Any = BodyLimit(self.app, self.nc.max_payload)  # the bus's limit, from its INFO
        if self.api_keys is not None:
            app = ApiKeyAuth(app, self.api_keys, self.log)
        config = uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            lifespan="off",
            server_header=False,
            timeout_graceful_shutdown=10,
        )
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="http")
        while not self._server.started:
            if self._task.done():
                exc = self._task.exception()
                raise RuntimeError(f"HTTP server did not start: {exc!r}")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self.stopping = True
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 15.0)
        if self._background:
            await asyncio.wait(list(self._background), timeout=5.0)
        if self.router is not None:
            await self.router.stop()

    def spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close_one_call_program(
        self, program_id: str, started_ns: int, carrier: dict[str, str]
    ) -> None:
        """End an implicit one-call program (and its trace's root span)."""
        try:
            reply = await close_program(self.ctx, ProgramClose(program_id=program_id))
            if isinstance(reply, ProgramReply):
                await program_telemetry().closed(
                    self.ctx.pool, reply, carrier, started_ns=started_ns
                )
        except Exception as exc:
            self.log.warning(
                "closing a one-call program failed", program_id=program_id, error=repr(exc)
            )


class FrontendWithHttp:
    """The frontend service plus its HTTP gateway, as one `Service` for `run_service`."""

    name = "frontend"

    def __init__(
        self,
        frontend: Any,
        log: Any,
        *,
        host: str,
        port: int,
        call_timeout_s: float,
        tool_call_parser: str | None = None,
        api_keys: dict[str, str] | None = None,
    ) -> None:
        self.frontend = frontend
        self.api_keys = api_keys
        self.tool_call_parser = tool_call_parser
        self.log = log
        self.host = host
        self.port = port
        self.call_timeout_s = call_timeout_s
        self.gateway: HttpGateway | None = None

    def ready_fields(self) -> dict[str, Any]:
        out = dict(self.frontend.ready_fields())
        if self.gateway is not None:
            out["http"] = self.gateway.url
        return out

    async def start(self) -> None:
        await self.frontend.start()
        self.gateway = HttpGateway(
            self.frontend.ctx,
            self.frontend.nc,
            self.log,
            host=self.host,
            port=self.port,
            call_timeout_s=self.call_timeout_s,
            tool_call_parser=self.tool_call_parser,
            api_keys=self.api_keys,
        )
        await self.gateway.start()

    async def stop(self) -> None:
        if self.gateway is not None:
            await self.gateway.stop()  # stop taking HTTP requests; finish the ones in flight
        await self.frontend.stop()
