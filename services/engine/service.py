"""Engine service process: registration, heartbeats, the dispatch consumer, control, reports.

Everything call-related is in `runner.py` and the job modules it joins (README.md, "Where each
job lives"); this module wires it to NATS and Postgres and owns the process lifecycle:

* **Start**: register in `engines`, take back calls a previous incarnation with the same id left
  active (they go back to `queued` and are re-dispatched), then consume this engine's dispatch
  subjects (all levels) from JetStream through a durable pull consumer `engine-<id>`. A Dispatch
  is acked once it sits in the local queues (acks go out in groups, within `ack_delay_s`): from
  then on Postgres (status dispatched, engine_id = us) is the record, and the schedulers' reaper
  re-dispatches it if we die.
* **Heartbeat** every `heartbeat_interval_s`: an `EngineHeartbeat` on NATS (schedulers keep live
  engines in memory from these) and the `engines` row in Postgres (the reaper's clock).
* **Progress** every `progress_interval_s`: tokens already streamed are saved, so a call that
  moves to another engine resumes rather than restarts; calls we no longer own are dropped;
  every `orphan_sweep_s`, calls Postgres says we own but we do not hold are handed back, and
  at once after a Postgres outage when no Dispatch is on its way here (`_sweep_after_outage`).
* **Reports** every `report_interval_s` while calls run: a `ServiceReport` with the attained
  service and run time of every running call whose service moved since the last one, for the
  schedulers' service accounting (they fold it into Postgres and decide demotions). Bounded
  rate: one message per interval per engine, whatever the token rate.
* **Backend death** (vLLM's engine core killed or crashed): calls are handed back with their
  progress, the heartbeat says draining, and the process stops as on SIGTERM but exits non-zero
  (a supervisor sees a failure and may restart it).
* **SIGTERM** (drain): heartbeat `draining=true` so no new calls come, hand waiting calls back at
  once, give running calls `drain_timeout_s` to finish, hand back the rest with their progress,
  hand back anything still dispatched to us in the stream, mark the engine down.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import signal
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from autellix.backends import create_backend
from autellix.runtime.service import run_service
from autellix.runtime.settings import Settings
from autellix.services.engine.runner import EngineRunner, RunnerConfig
from autellix.store.db import create_pool, db_unavailable, synchronous_commit_for
from autellix.store.engines import Beat, engine_heartbeats, register_engine, set_engine_status
from autellix.store.requeue import requeue_engine_calls
from autellix.transport import bus, direct
from autellix.wire.protocol import Control, Dispatch, EngineHeartbeat, Subjects, encode

_ENGINE_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,100}$")


@dataclass
class EngineOptions:
    backend: str = "sim"
    engine_id: str | None = None
    backend_options: dict[str, Any] = field(default_factory=dict)
    heartbeat_interval_s: float = 1.0
    progress_interval_s: float = 1.0
    report_interval_s: float = 0.1
    drain_timeout_s: float = 20.0
    orphan_sweep_s: float = 30.0
    #: once Postgres is back after an outage, calls owned here but not held that were
    #: dispatched longer ago than this are handed back at once (see `_sweep_after_outage`)
    outage_sweep_age_s: float = 3.0
    ack_delay_s: float = 0.005  # Dispatch acks are sent in groups (see `_ack_soon`)
    #: direct Dispatch offers (`transport.direct`) are refused while this many calls wait in
    #: the local queues: a backlog stays in JetStream
    direct_backlog: int = 256
    runner: RunnerConfig = field(default_factory=RunnerConfig)
    #: the model names calls may ask for (vLLM's --served-model-name); empty: the model itself
    served_models: list[str] = field(default_factory=list)

    def resolved_id(self) -> str:
        eid = self.engine_id or f"{self.backend}-{secrets.token_hex(3)}"
        if not _ENGINE_ID_RE.match(eid):
            raise ValueError(f"invalid engine id {eid!r}: use letters, digits, _ and -")
        return eid


@dataclass(frozen=True)
class SharedIO:
    """What the identities of one engine host (`host.py`) share: one NATS connection (its
    JetStream context) and one Postgres pool. The host heartbeats for all of them."""

    nc: Any
    js: Any
    pool: Any


class EngineService:
    name = "engine"

    def __init__(
        self,
        settings: Settings,
        options: EngineOptions,
        log: Any,
        shared: SharedIO | None = None,
    ) -> None:
        self.settings = settings
        self.opts = options
        self.shared = shared
        self.engine_id = options.resolved_id()
        self.subjects = Subjects(settings.namespace)
        self.log = log.bind(engine_id=self.engine_id)
        self.draining = False
        self._tasks: list[asyncio.Task[None]] = []
        self._last_sweep = time.monotonic()  # the last periodic orphan sweep
        self.nc: Any = None
        self.js: Any = None
        self.pool: Any = None
        self.consumer: bus.PullConsumer | None = None
        self.runner: EngineRunner | None = None
        self.backend: Any = None
        self.backend_failure: str | None = None
        self._acks: list[Any] = []
        self._ack_handle: asyncio.TimerHandle | None = None
        self._ack_tasks: set[asyncio.Task[None]] = set()
        self._direct_sub: Any = None
        self.direct_taken = 0
        self.direct_refused = 0

    def ready_fields(self) -> dict[str, Any]:
        return {
            "engine_id": self.engine_id,
            "backend": self.backend.name,
            "model": self.backend.model,
            "max_batch": self.backend.max_batch,
        }

    async def start(self) -> None:
        self.backend = create_backend(self.opts.backend, **self.opts.backend_options)
        await self.backend.start()
        if self.shared is not None:
            self.nc, self.js, self.pool = self.shared.nc, self.shared.js, self.shared.pool
        else:
            await self._connect()
        await register_engine(
            self.pool,
            engine_id=self.engine_id,
            backend=self.backend.name,
            model=self.backend.model,
            max_batch=self.backend.max_batch,
            meta={"max_model_len": self.backend.max_model_len},
        )
        leftovers = await requeue_engine_calls(
            self.pool, [self.engine_id], actor=self.engine_id, reason="engine restarted"
        )
        if leftovers:
            await bus.publish_schedule(self.js, self.subjects, leftovers, reason="redispatch")
            self.log.info("handed back calls of a previous incarnation", calls=len(leftovers))
        self.runner = EngineRunner(
            backend=self.backend,
            pool=self.pool,
            nc=self.nc,
            js=self.js,
            subjects=self.subjects,
            engine_id=self.engine_id,
            log=self.log,
            config=self.opts.runner,
        )
        self.runner.on_backend_dead = self._on_backend_dead
        durable = f"engine-{self.engine_id}"
        if await bus.drop_dead_deliveries(self.js, self.subjects.dispatch_stream, durable):
            self.log.info("dispatch consumer made again: a previous incarnation left deliveries")
        await bus.ensure_consumer(
            self.js,
            self.subjects.dispatch_stream,
            durable,
            self.subjects.dispatch_all(self.engine_id),
            inactive_threshold=3600.0,
        )
        self.consumer = bus.PullConsumer(self.nc, self.subjects.dispatch_stream, durable)
        await self.consumer.start()
        await self.nc.subscribe(self.subjects.control(self.engine_id), cb=self._on_control)
        self._direct_sub = await self.nc.subscribe(
            self.subjects.dispatch_direct(self.engine_id), cb=self._on_direct
        )
        await self._heartbeat_once()
        self._last_sweep = time.monotonic()
        loops = [self._consume()]
        if self.shared is None:
            # a host's identities are heartbeaten, saved and reported by the host, from one
            # loop each: a thousand identities' own timers woke the process ~11,000 times a
            # second doing nothing, and every Dispatch it received waited behind them
            loops += [self._progress_loop(), self._report_loop(), self._heartbeat_loop()]
        for coro in loops:
            self._tasks.append(asyncio.create_task(coro))

    async def _connect(self) -> None:
        assert self.settings.nats_url and self.settings.database_url
        self.nc = await bus.connect(
            self.settings.nats_url, name=f"autellix-{self.engine_id}", log=self.log
        )
        self.js = self.nc.jetstream()
        await bus.ensure_streams(self.js, self.subjects)
        self.pool = await create_pool(
            self.settings.database_url,
            max_size=8,
            application_name=f"autellix-{self.engine_id}",
            synchronous_commit=synchronous_commit_for("engine"),
            # statements by call id or engine id only: `finish_call` was re-planned on every
            # call (0.65 -> 0.58 ms with the generic plan, bench/overhead/README.md "Session 6")
            generic_plans=True,
        )

    # ------------------------------------------------------------------ loops

    async def _consume(self) -> None:
        """Take Dispatches into the runner, every message already received in one go.

        Why in one go: between two loop iterations nats-py writes everything published (here:
        the acks) in one socket write, and each write costs more CPU than handling a Dispatch
        (profiled: half of an idle engine's CPU in a burst was those writes)."""
        consumer = self.consumer
        assert consumer is not None and self.runner is not None
        while True:  # ends by cancellation (stop); no per-message timeout task
            msg: Any = await consumer.next(None)
            while msg is not None:
                await self._take(msg)
                msg = await consumer.next(None) if consumer.pending() else None

    async def _on_direct(self, msg: Any) -> None:
        """A Dispatch offered directly: taken like one from JetStream (answered when it would
        have been acked), unless we are draining or already hold a backlog."""
        assert self.runner is not None and self.consumer is not None
        if self.draining or len(self.runner.queues) + self.consumer.pending() >= (
            self.opts.direct_backlog
        ):
            self.direct_refused += 1
            await direct.refuse(self.nc, msg, "draining" if self.draining else "busy")
            return
        self.direct_taken += 1
        self.consumer.inject(direct.DirectMsg(self.nc, msg))

    async def _take(self, msg: Any) -> None:
        assert self.runner is not None
        try:
            dispatch = Dispatch.model_validate_json(msg.data)
        except ValidationError as exc:
            self.log.error("invalid dispatch message dropped", error=str(exc)[:500])
            with contextlib.suppress(Exception):
                await msg.term()
            return
        if not self.runner.offer(dispatch):
            self.log.debug("duplicate or stale dispatch", call_id=dispatch.call_id)
        self._ack_soon(msg)

    def _ack_soon(self, msg: Any) -> None:
        """Ack within `ack_delay_s`, together with the other Dispatches taken meanwhile.

        Why not at once: the ack's socket write then lands between taking a call and running
        it. Safe to delay: until acked, JetStream would only redeliver it (after the consumer's
        ack wait, 30 s) to this engine, which drops a (call, attempt) it already holds; after a
        crash the restarted engine first hands back every call Postgres says it owned, so a
        redelivered Dispatch no longer matches its `running` transition and is dropped."""
        self._acks.append(msg)
        if self._ack_handle is None:
            loop = asyncio.get_running_loop()
            self._ack_handle = loop.call_later(self.opts.ack_delay_s, self._ack_now)

    def _ack_now(self) -> None:
        self._ack_handle = None
        acks, self._acks = self._acks, []
        if acks:
            task = asyncio.get_running_loop().create_task(self._send_acks(acks))
            self._ack_tasks.add(task)
            task.add_done_callback(self._ack_tasks.discard)

    async def _send_acks(self, acks: list[Any]) -> None:
        for m in acks:  # each is a publish into nats-py's buffer: one socket write for all
            with contextlib.suppress(Exception):
                await m.ack()

    async def _on_control(self, msg: Any) -> None:
        try:
            ctl = Control.model_validate_json(msg.data)
        except ValidationError as exc:
            self.log.error("invalid control message dropped", error=str(exc)[:500])
            return
        assert self.runner is not None
        self.log.info("control", action=ctl.action, call_id=ctl.call_id, level=ctl.level)
        self.runner.control(ctl)

    def heartbeat(self) -> EngineHeartbeat:
        assert self.runner is not None
        stats = self.backend.stats()
        return EngineHeartbeat(
            engine_id=self.engine_id,
            backend=self.backend.name,
            model=self.backend.model,
            served_models=list(self.opts.served_models),
            max_batch=self.backend.max_batch,
            running=len(self.runner.running),
            waiting=len(self.runner.queues),
            kv_cache_usage=stats.kv_cache_usage,
            queue_depths=self.runner.queues.depths(),
            at=datetime.now(UTC),
            draining=self.draining,
            prefix_cache_hit_rate=stats.prefix_cache_hit_rate,
            work=stats.work,
        )

    async def publish_heartbeat(self) -> Beat:
        """This engine's heartbeat on NATS; returns the figures its `engines` row keeps."""
        hb = self.heartbeat()
        await self.nc.publish(self.subjects.heartbeat, encode(hb))
        return beat_of(hb)

    async def _heartbeat_once(self) -> None:
        beat = await self.publish_heartbeat()
        try:
            await engine_heartbeats(self.pool, [beat])
        except Exception as exc:
            self.log.warning("heartbeat not written to Postgres", error=repr(exc))
            if self.runner is not None and db_unavailable(exc):
                self.runner.db_outage = True

    def check_backend(self) -> None:
        """A backend that died while idle: nobody else notices (the heartbeat loop asks)."""
        if getattr(self.backend, "dead", False):
            self._on_backend_dead("engine backend is dead")

    def _on_backend_dead(self, why: str) -> None:
        """Stop taking calls now and shut down as on SIGTERM (calls are handed back); `stop`
        then fails, so the process exits non-zero."""
        if self.backend_failure is not None:
            return
        self.backend_failure = why
        self.draining = True
        self.log.error("engine backend died: handing calls back and exiting", error=why)
        # heartbeat `draining` at once, so schedulers stop sending calls before they re-dispatch
        self._tasks.append(asyncio.get_running_loop().create_task(self._heartbeat_once()))
        os.kill(os.getpid(), signal.SIGTERM)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.opts.heartbeat_interval_s)
            self.check_backend()
            try:
                await self._heartbeat_once()
            except Exception as exc:
                self.log.warning("heartbeat failed", error=repr(exc))

    async def _progress_loop(self) -> None:
        while True:
            await asyncio.sleep(self.opts.progress_interval_s)
            await self.progress_tick()

    async def progress_tick(self) -> None:
        """One progress round: save streamed tokens, drop calls no longer ours, sweep orphans
        when due. Its own loop calls it every `progress_interval_s`; an engine host calls it for
        all its identities from one loop (`host.py`)."""
        assert self.runner is not None
        try:
            await self.runner.save_progress_and_check()
            if self.runner.db_outage:
                await self._sweep_after_outage()
            if time.monotonic() - self._last_sweep >= self.opts.orphan_sweep_s:
                self._last_sweep = time.monotonic()
                await self.runner.sweep_orphans(self.opts.orphan_sweep_s)
        except Exception as exc:
            self.log.warning("progress save failed", error=repr(exc))
            if db_unavailable(exc):
                self.runner.db_outage = True

    async def _sweep_after_outage(self) -> None:
        """Postgres answers again after an outage: hand back at once the calls it says this
        engine owns that it does not hold.

        Why: through an outage a Dispatch can be dropped (its call could not be marked
        running) or a transition can fail for good, and the periodic sweep (`orphan_sweep_s`,
        30 s, for calls dispatched 30 s ago) would hand such a call back 30-60 s later, past a
        caller's deadline. The periodic sweep waits that long because a call whose Dispatch
        still waits in JetStream is not an orphan; so this one runs only when nothing is on its
        way here (no Dispatch pending in this engine's consumer or its local queue), and
        otherwise tries again at the next progress tick.
        """
        assert self.runner is not None and self.consumer is not None
        if self.consumer.pending():
            return
        info = await self.js.consumer_info(
            self.subjects.dispatch_stream, f"engine-{self.engine_id}"
        )
        if info.num_pending:
            return
        self.runner.db_outage = False
        handed = await self.runner.sweep_orphans(self.opts.outage_sweep_age_s)
        self.log.info("swept after a database outage", handed_back=handed)

    async def _report_loop(self) -> None:
        if self.opts.report_interval_s <= 0:
            return
        while True:
            await asyncio.sleep(self.opts.report_interval_s)
            await self.report_tick()

    async def report_tick(self) -> None:
        """One `ServiceReport` of the running calls whose service moved (none: nothing sent)."""
        assert self.runner is not None
        if self.runner.running:
            await self.runner.publish_report(self.runner.progress(changed_only=True))

    # ------------------------------------------------------------------ stop

    async def stop(self) -> None:
        assert self.runner is not None and self.consumer is not None
        self.draining = True
        if self._direct_sub is not None:  # schedulers fall back to JetStream from now on
            with contextlib.suppress(Exception):
                await self._direct_sub.unsubscribe()
        with contextlib.suppress(Exception):
            await self._heartbeat_once()  # tell schedulers now: no new calls for us
        for t in self._tasks:
            if t.get_coro().__name__ in ("_consume", "_report_loop", "_progress_loop"):
                t.cancel()
        for msg in await self.consumer.stop():  # received, never taken
            if isinstance(msg, direct.DirectMsg):  # JetStream redelivers the others
                await msg.refuse("draining")
        if self._ack_handle is not None:  # what was taken is ours: ack it before draining
            self._ack_handle.cancel()
        self._ack_now()
        if self._ack_tasks:
            await asyncio.wait(list(self._ack_tasks), timeout=5.0)
        self.log.info(
            "draining",
            running=len(self.runner.running),
            waiting=len(self.runner.queues),
        )
        await self.runner.drain(self.opts.drain_timeout_s)
        # anything dispatched to us that we never pulled goes back to the schedulers too
        left = await requeue_engine_calls(
            self.pool, [self.engine_id], actor=self.engine_id, reason="engine stopped"
        )
        if left:
            await bus.publish_schedule(self.js, self.subjects, left, reason="redispatch")
        await set_engine_status(self.pool, self.engine_id, "down")
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.shared is None:  # a host closes what its identities share
            with contextlib.suppress(Exception):
                await self.nc.drain()
            await self.pool.close()
        await self.backend.stop()
        self.log.info(
            "engine totals",
            finished=self.runner.finished,
            failed=self.runner.failed,
            preemptions=self.runner.preemptions,
            direct_taken=self.direct_taken,
            direct_refused=self.direct_refused,
            handed_back=len(left),
        )
        if self.backend_failure is not None:
            raise RuntimeError(f"engine backend died: {self.backend_failure}")


def beat_of(hb: EngineHeartbeat) -> Beat:
    """The figures of a heartbeat its `engines` row keeps."""
    return Beat(hb.engine_id, hb.running, hb.waiting, hb.kv_cache_usage)


async def build(settings: Settings, log: Any, options: EngineOptions) -> EngineService:
    return EngineService(settings, options, log)


def run(settings: Settings, options: EngineOptions) -> None:
    """Run one engine process until SIGTERM (`python -m autellix.services.engine` parses the flags
    into `options` and calls this)."""

    async def _build(s: Settings, log: Any) -> EngineService:
        return await build(s, log, options)

    run_service("engine", _build, settings)
