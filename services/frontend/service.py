"""Frontend process wiring: the NATS API (`nats_api.py`), plus the HTTP API when asked for.

`python -m autellix.services.frontend` parses its flags into `FrontendOptions` and calls `run`;
everything the process does lives in the modules this one puts together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from autellix.runtime.service import Service, run_service
from autellix.runtime.settings import Settings
from autellix.services.frontend.admission import (
    DEFAULT_MAX_UNFINISHED_CALLS,
    DEFAULT_MAX_UNFINISHED_CALLS_PER_TENANT,
)
from autellix.services.frontend.nats_api import build as build_nats_api


@dataclass
class FrontendOptions:
    """The frontend's flags: request concurrency and the optional OpenAI-compatible HTTP API."""

    concurrency: int = 256
    http_port: int | None = None  # None: NATS only
    http_host: str = "127.0.0.1"
    http_call_timeout_s: float = 600.0
    #: HTTP: how `tool_choice: auto` answers are read (`hermes`, `llama3_json`; None: by model)
    tool_call_parser: str | None = None
    #: back-pressure: calls beyond this many unfinished ones are refused (0: no bound)
    max_unfinished_calls: int = DEFAULT_MAX_UNFINISHED_CALLS
    #: back-pressure per tenant (an HTTP API key's): past it that tenant's calls are refused
    max_unfinished_calls_per_tenant: int = DEFAULT_MAX_UNFINISHED_CALLS_PER_TENANT
    #: HTTP: Bearer keys and their tenants (`autellix.runtime.api_keys`); None: open
    api_keys: dict[str, str] | None = None


async def build(settings: Settings, log: Any, options: FrontendOptions) -> Service:
    """The NATS frontend, wrapped with the HTTP gateway when `http_port` is set."""
    frontend = await build_nats_api(
        settings,
        log,
        options.concurrency,
        options.max_unfinished_calls,
        options.max_unfinished_calls_per_tenant,
    )
    if options.http_port is None:
        return frontend
    from autellix.services.frontend.http_server import FrontendWithHttp  # uvicorn: only if used

    return FrontendWithHttp(
        frontend,
        log,
        host=options.http_host,
        port=options.http_port,
        call_timeout_s=options.http_call_timeout_s,
        tool_call_parser=options.tool_call_parser,
        api_keys=options.api_keys,
    )


def run(settings: Settings, options: FrontendOptions) -> None:
    """Run one frontend process until SIGTERM."""

    async def _build(s: Settings, log: Any) -> Service:
        return await build(s, log, options)

    run_service("frontend", _build, settings)
