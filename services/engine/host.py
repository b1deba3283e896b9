"""Many light engine identities in one process (`--identities N`): the control plane at scale.

Why: the schedulers' work grows with the number of engines they choose from and hear from, and a
thousand real engines do not fit one machine. An identity is a whole engine as the rest of the
system sees it (its `engines` row, heartbeats, its own dispatch consumer and direct subject,
level queues, admission, streaming, finishing, hand-back: an `EngineService`), over its own
simulated backend; what the identities share is the process's one NATS connection and one
Postgres pool. With a zero step time (`--token-latency 0`) an identity does no generation work
at all, so a thousand of them cost the machine little beyond what the control plane does.

Heartbeats are the host's job, not each identity's: every `heartbeat_interval_s` the host
publishes its identities' `EngineHeartbeat`s on NATS, batched (`EngineHeartbeats`, a few dozen
messages a second for a thousand identities) and writes all their `engines` rows in one
statement (`store.engines.engine_heartbeats`), so Postgres sees one heartbeat transaction per
interval per process however many identities it holds. So are the identities' progress saves and
service reports: one host loop each walks the identities (`_tick_loop`) instead of every
identity waking on timers of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

from autellix.runtime.engine_ids import identity_ids
from autellix.runtime.service import run_service
from autellix.runtime.settings import Settings
from autellix.services.engine.service import EngineOptions, EngineService, SharedIO, beat_of
from autellix.store.db import create_pool, db_unavailable, synchronous_commit_for
from autellix.store.engines import engine_heartbeats
from autellix.transport import bus
from autellix.wire.protocol import EngineHeartbeats, Subjects, encode

#: identities started or stopped at once (each start is a few Postgres and JetStream round trips)
START_CONCURRENCY = 32
#: heartbeats in one `EngineHeartbeats` message, built between two yields to the event loop
#: (`heartbeat_once`)
BEAT_CHUNK = 25


class EngineHost:
    """`count` `EngineService` identities over one NATS connection and one Postgres pool."""

    name = "engine"

    def __init__(self, settings: Settings, options: EngineOptions, count: int, log: Any) -> None:
        if count < 1:
            raise ValueError("an engine host needs at least one identity")
        self.settings = settings
        self.opts = options
        self.base_id = options.resolved_id()
        self.ids = identity_ids(self.base_id, count)
        self.subjects = Subjects(settings.namespace)
        self.log = log.bind(engine_host=self.base_id)
        self.identities: list[EngineService] = []
        self.nc: Any = None
        self.pool: Any = None
        self._beat_task: asyncio.Task[None] | None = None
        self._tick_tasks: list[asyncio.Task[None]] = []

    def ready_fields(self) -> dict[str, Any]:
        first = self.identities[0] if self.identities else None
        return {
            "engine_host": self.base_id,
            "identities": len(self.identities),
            "engine_ids": f"{self.ids[0]} .. {self.ids[-1]}",
            "backend": first.backend.name if first else self.opts.backend,
        }

    async def start(self) -> None:
        assert self.settings.nats_url and self.settings.database_url
        self.nc = await bus.connect(
            self.settings.nats_url, name=f"autellix-{self.base_id}", log=self.log
        )
        js = self.nc.jetstream()
        await bus.ensure_streams(js, self.subjects)
        self.pool = await create_pool(
            self.settings.database_url,
            max_size=8,
            application_name=f"autellix-{self.base_id}",
            synchronous_commit=synchronous_commit_for("engine"),
            generic_plans=True,
        )
        shared = SharedIO(nc=self.nc, js=js, pool=self.pool)
        for eid in self.ids:
            opts = dataclasses.replace(self.opts, engine_id=eid)
            self.identities.append(EngineService(self.settings, opts, self.log, shared=shared))
        # heartbeats from the start: an identity that started early must not look stale to the
        # schedulers' reaper while the last ones are still starting
        self._beat_task = asyncio.create_task(self._heartbeat_loop(), name="host-heartbeats")
        await self._each(lambda s: s.start())
        self._tick_tasks = [
            asyncio.create_task(
                self._tick_loop(self.opts.progress_interval_s, EngineService.progress_tick),
                name="host-progress",
            )
        ]
        if self.opts.report_interval_s > 0:
            self._tick_tasks.append(
                asyncio.create_task(
                    self._tick_loop(
                        self.opts.report_interval_s, EngineService.report_tick, busy_only=True
                    ),
                    name="host-reports",
                )
            )
        self.log.info("engine host started", identities=len(self.identities))

    async def _each(self, fn: Any) -> None:
        """`fn(identity)` for every identity, `START_CONCURRENCY` at a time; the first failure
        is raised once all have run."""
        sem = asyncio.Semaphore(START_CONCURRENCY)

        async def one(svc: EngineService) -> None:
            async with sem:
                await fn(svc)

        results = await asyncio.gather(*(one(s) for s in self.identities), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r

    async def heartbeat_once(self, spread_s: float = 0.0) -> None:
        """Every started identity's heartbeat on NATS, `BEAT_CHUNK` to a message
        (`EngineHeartbeats`), then their rows in one Postgres statement.

        The event loop is given back every `BEAT_CHUNK` identities: a thousand heartbeats built
        in one go held it for a quarter of a second on a busy machine, and every call waiting on
        an identity (a direct Dispatch offer, a start record) waited that long too. With
        `spread_s` the chunks are spread over that many seconds, so the schedulers, which hear
        every heartbeat, get them as a steady trickle rather than one burst a second."""
        beats = []
        started = [s for s in self.identities if s.runner is not None]
        chunks = max(1, -(-len(started) // BEAT_CHUNK))
        for at in range(0, len(started), BEAT_CHUNK):
            batch = []
            for svc in started[at : at + BEAT_CHUNK]:
                svc.check_backend()
                hb = svc.heartbeat()
                batch.append(hb)
                beats.append(beat_of(hb))
            await self.nc.publish(self.subjects.heartbeat, encode(EngineHeartbeats(beats=batch)))
            await asyncio.sleep(spread_s / chunks)
        try:
            await engine_heartbeats(self.pool, beats)
        except Exception as exc:
            self.log.warning("heartbeats not written to Postgres", error=repr(exc))
            if db_unavailable(exc):
                # every identity sweeps for orphans once Postgres is back, also one with no
                # call in hand (a Dispatch lost in the outage leaves it owning one it never got)
                for svc in started:
                    if svc.runner is not None:
                        svc.runner.db_outage = True

    async def _tick_loop(
        self,
        interval: float,
        tick: Callable[[EngineService], Awaitable[None]],
        *,
        busy_only: bool = False,
    ) -> None:
        """Every `interval`, `tick` (`progress_tick`, `report_tick`) of each identity, giving
        the event loop back every `BEAT_CHUNK` of them; with `busy_only`, only identities with
        running calls (a report of an idle identity is empty)."""
        while True:
            await asyncio.sleep(interval)
            done = 0
            for svc in self.identities:
                if svc.runner is None or (busy_only and not svc.runner.running):
                    continue
                try:
                    await tick(svc)
                except Exception as exc:
                    self.log.warning(
                        f"{tick.__name__} failed", engine_id=svc.engine_id, error=repr(exc)
                    )
                done += 1
                if done % BEAT_CHUNK == 0:
                    await asyncio.sleep(0)

    async def _heartbeat_loop(self) -> None:
        """One round per `heartbeat_interval_s`, paced by deadlines (a round's own length does
        not stretch the interval), each spread over half the interval."""
        interval = self.opts.heartbeat_interval_s
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            next_at = max(next_at + interval, loop.time())
            await asyncio.sleep(next_at - loop.time())
            try:
                await self.heartbeat_once(spread_s=interval / 2)
            except Exception as exc:
                self.log.warning("heartbeat failed", error=repr(exc))

    async def stop(self) -> None:
        for task in [*self._tick_tasks, self._beat_task]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        try:
            await self._each(_stop_started)
        finally:
            with contextlib.suppress(Exception):
                await self.nc.drain()
            await self.pool.close()


async def _stop_started(svc: EngineService) -> None:
    if svc.runner is not None:  # a start that failed half-way left nothing to drain
        await svc.stop()


def run(settings: Settings, options: EngineOptions, count: int) -> None:
    """Run a host of `count` identities until SIGTERM (`--identities N`)."""

    async def _build(s: Settings, log: Any) -> EngineHost:
        return EngineHost(s, options, count, log)

    run_service("engine", _build, settings)
