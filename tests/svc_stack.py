"""Helpers for the end-to-end tests: start real service processes, record replies on the wire.

`Stack` wraps E's `ProcessGroup` with the three service command lines for one namespace and
database; `WireRecorder` submits raw `CallRequest`s and keeps *every* message each inbox gets, so
a test can check "exactly once" on the wire, not just through the client's de-duplication.

These stacks run on the test NATS server without authentication, like `autellix up --insecure`:
per-role NATS users are tested on stacks of their own (`tests/stack/test_nats_auth.py`,
`autellix.local.stack.StackConfig(auth=True)`, and `autellix up` in test_cli_stack.py).
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from autellix.local.supervisor import ProcessGroup, ServiceSpec
from autellix.runtime.settings import Settings, asyncpg_dsn
from autellix.wire.protocol import (
    CALL_REPLY,
    CallAccepted,
    CallError,
    CallFinal,
    CallRequest,
    Subjects,
    TokenDelta,
    encode,
)

READY = '"event": "{name} ready"'


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Stack:
    settings: Settings
    log_dir: Path
    group: ProcessGroup = field(init=False)

    #: the OpenAI HTTP API's base URL once `start_frontend(http=True)` ran
    http_url: str | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.group = ProcessGroup(log_dir=self.log_dir, echo=False)
        self.subjects = Subjects(self.settings.namespace)

    def start_frontend(
        self,
        *args: str,
        http: bool = False,
        name: str = "frontend",
        env: dict[str, str] | None = None,
    ) -> None:
        """Start a frontend; with `http`, also its HTTP API on a free port (`http_url`)."""
        if http:
            port = free_port()
            self.http_url = f"http://127.0.0.1:{port}"
            args = ("--http-port", str(port), *args)
        self.start(name, "frontend", *args, env=env)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Stack]:
        """Wait until every started service says it is ready; stop them all on the way out."""
        try:
            await self.wait_ready()
            yield self
        finally:
            await self.stop()

    def _spec(
        self,
        name: str,
        module: str,
        args: list[str],
        stop_timeout: float,
        env: dict[str, str] | None = None,
    ) -> ServiceSpec:
        env = {**self.settings.to_env(), "AUTELLIX_LOG_LEVEL": "info", **(env or {})}
        return ServiceSpec(
            name=name,
            argv=[sys.executable, "-m", f"autellix.services.{module}", *args],
            env=env,
            ready_pattern=READY.format(name=module),
            stop_timeout=stop_timeout,
        )

    def start(
        self,
        name: str,
        module: str,
        *args: str,
        stop_timeout: float = 15.0,
        env: dict[str, str] | None = None,
    ) -> None:
        self.group.start(self._spec(name, module, list(args), stop_timeout, env))

    def start_engine(self, name: str, *args: str) -> None:
        self.start(name, "engine", "--engine-id", name, *args, stop_timeout=30.0)

    async def wait_ready(self, *names: str, wait_s: float = 90.0) -> None:
        await asyncio.gather(
            *(self.group.wait_ready_async(n, timeout=wait_s) for n in names or self.group.names)
        )

    def logs(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text()

    async def stop(self) -> None:
        await asyncio.to_thread(self.group.stop_all, 30.0)


def stack_fixture(
    *,
    scheduler: Sequence[str] = (),
    engines: Mapping[str, Sequence[str]] | None = None,
    frontend: Sequence[str] = (),
    http: bool = False,
    await_engines: bool = False,
) -> Any:
    """A module-scoped `stack` fixture: one frontend (`frontend`: its extra flags; `http`: with
    its HTTP API), one scheduler (`scheduler`: its flags) and the named `engines` (each with its
    flags). With `await_engines` (needs `http`) it yields once the frontend's /health counts
    every engine, so the first test does not race the engines' first heartbeats."""
    import httpx
    import pytest_asyncio

    named = dict(engines or {})

    @pytest_asyncio.fixture(scope="module")
    async def stack(new_stack: Callable[[], Stack]) -> AsyncIterator[Stack]:
        s = new_stack()
        s.start_frontend(*frontend, http=http)
        s.start("scheduler", "scheduler", *scheduler)
        for name, args in named.items():
            s.start_engine(name, *args)
        async with s.running():
            if await_engines:
                async with httpx.AsyncClient(base_url=s.http_url) as h:
                    for _ in range(200):
                        if (await h.get("/health")).json()["engines"] >= len(named):
                            break
                        await asyncio.sleep(0.1)
            yield s

    return stack


async def db_fetch(database_url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


@dataclass
class WireCall:
    token: str
    request: CallRequest
    messages: list[Any] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    submitted: float = field(default_factory=time.monotonic)
    finished: float | None = None

    @property
    def call_id(self) -> str | None:
        for m in self.messages:
            if isinstance(m, CallAccepted):
                return m.call_id
        return None

    @property
    def terminal(self) -> list[CallFinal | CallError]:
        return [m for m in self.messages if isinstance(m, CallFinal | CallError)]

    @property
    def final(self) -> CallFinal:
        (t,) = self.terminal
        assert isinstance(t, CallFinal), t
        return t

    def streamed_tokens(self) -> list[int]:
        """Tokens from the deltas, placed by offset (replays must agree with what is there)."""
        out: list[int] = []
        for m in self.messages:
            if isinstance(m, TokenDelta):
                for i, tok in enumerate(m.token_ids, start=m.offset):
                    if i < len(out):
                        assert out[i] == tok, f"replayed token differs at {i}"
                    else:
                        assert i == len(out), f"gap in stream at {len(out)} (got offset {i})"
                        out.append(tok)
        return out


class WireRecorder:
    """Submit raw requests; record every reply per inbox (see module docstring)."""

    def __init__(self, nc: Any, subjects: Subjects) -> None:
        self.nc = nc
        self.subjects = subjects
        self.calls: dict[str, WireCall] = {}
        self.raw: dict[str, list[bytes]] = defaultdict(list)
        self._n = 0
        self._prefix = nc.new_inbox()
        self._sub: Any = None

    async def start(self) -> WireRecorder:
        self._sub = await self.nc.subscribe(f"{self._prefix}.*", cb=self._on_msg)
        return self

    async def _on_msg(self, msg: Any) -> None:
        token = msg.subject.rsplit(".", 1)[-1]
        self.raw[token].append(msg.data)
        call = self.calls.get(token)
        if call is None:
            return
        reply = CALL_REPLY.validate_json(msg.data)
        call.messages.append(reply)
        if isinstance(reply, CallFinal | CallError) and not call.done.is_set():
            call.finished = time.monotonic()
            call.done.set()

    def expect(self, request: CallRequest) -> tuple[WireCall, str]:
        """Register an inbox without submitting (tests that act as the scheduler)."""
        self._n += 1
        token = f"c{self._n}"
        call = WireCall(token=token, request=request)
        self.calls[token] = call
        return call, f"{self._prefix}.{token}"

    async def submit(self, request: CallRequest) -> WireCall:
        self._n += 1
        token = f"c{self._n}"
        call = WireCall(token=token, request=request)
        self.calls[token] = call
        await self.nc.publish(
            self.subjects.submit, encode(request), reply=f"{self._prefix}.{token}"
        )
        return call

    async def submit_raw(self, payload: bytes) -> WireCall:
        """Publish arbitrary bytes (bad-input tests); replies are recorded the same way."""
        self._n += 1
        token = f"c{self._n}"
        call = WireCall(token=token, request=None)  # type: ignore[arg-type]
        self.calls[token] = call
        await self.nc.publish(self.subjects.submit, payload, reply=f"{self._prefix}.{token}")
        return call

    async def run(self, request: CallRequest, wait_s: float = 60.0) -> WireCall:
        call = await self.submit(request)
        await asyncio.wait_for(call.done.wait(), wait_s)
        return call

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
