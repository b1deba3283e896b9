"""Scheduler service process: consume ScheduleCalls, dispatch, keep engines honest.

Stateless by construction: the calls live in Postgres, the queue in JetStream (one durable pull
consumer, `Subjects.scheduler_durable`, shared by all replicas: each message goes to one of
them), and engine liveness in heartbeats every replica hears. Any number of replicas can run;
any of them can be SIGKILLed (see `dispatcher.py` for why that loses nothing).

Messages are handled in batches (whatever has arrived, up to `batch`; see `dispatcher.py`), with
at most `concurrency` messages in flight, so Postgres round trips are shared by many calls and
overlap; `--concurrency 1` gives strict arrival order per replica.

The policy (`--policy`, see `decide.py`) is the same code the simulator runs; progress reports
are folded and demotions decided by `accounting.py`; promotions, lost engines and idle programs
by `maintenance.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from autellix.runtime.service import run_service
from autellix.runtime.settings import Settings
from autellix.services.scheduler.accounting import ServiceAccounting
from autellix.services.scheduler.decide import LivePolicy
from autellix.services.scheduler.dispatcher import Dispatcher
from autellix.services.scheduler.engines import EngineRegistry
from autellix.services.scheduler.maintenance import Maintenance
from autellix.store.db import create_pool, db_unavailable, synchronous_commit_for
from autellix.store.engines import live_engines
from autellix.transport import bus, direct
from autellix.wire.protocol import ErrorCode, Subjects, heartbeats_in


@dataclass
class SchedulerOptions:
    concurrency: int = 512
    #: a killed replica's pulled ScheduleCalls wait this long for redelivery (`autellix chaos`:
    #: 10 s was a 10 s stall of every call it held); a batch is handled in milliseconds, and a
    #: slow one redelivered to another replica is decided once (conditional transitions)
    ack_wait_s: float = 3.0
    pull_expires_s: float = 1.0
    no_engine_timeout_s: float = 60.0
    retry_delay_s: float = 0.5
    engine_live_s: float = 3.0
    engine_stale_s: float = 5.0
    maintenance_interval_s: float = 1.0
    reconcile_after_s: float = 30.0
    replica: str | None = None
    batch: int = 256
    policy: LivePolicy | None = None
    fold_interval_s: float = 0.05
    starvation_interval_s: float = 0.5
    program_idle_ttl_s: float = 600.0
    #: direct offers (`transport.direct`) are refused while this many ScheduleCalls are held:
    #: a backlog stays in JetStream (ordered, bounded memory) instead of in this process
    direct_backlog: int = 64


class SchedulerService:
    name = "scheduler"

    def __init__(self, settings: Settings, options: SchedulerOptions, log: Any) -> None:
        self.settings = settings
        self.opts = options
        self.subjects = Subjects(settings.namespace)
        self.actor = options.replica or f"scheduler-{socket.gethostname()}-{os.getpid()}"
        self.log = log.bind(replica=self.actor)
        self.registry = EngineRegistry(stale_after_s=options.engine_live_s)
        self.policy = options.policy or LivePolicy.build()
        self._tasks: list[asyncio.Task[None]] = []
        self._inflight: set[asyncio.Task[None]] = set()
        self._sem = asyncio.Semaphore(options.concurrency)
        self._held = 0  # ScheduleCalls received and not yet done (queued here or in a batch)
        self.direct_taken = 0
        self.direct_refused = 0
        self._direct_sub: Any = None
        self.nc: Any = None
        self.pool: Any = None
        self.dispatch_pool: Any = None
        self.consumer: bus.PullConsumer | None = None
        self.dispatcher: Dispatcher | None = None
        self.accounting: ServiceAccounting | None = None
        self.maintenance: Maintenance | None = None

    def ready_fields(self) -> dict[str, Any]:
        return {
            "replica": self.actor,
            "engines": len(self.registry.live()),
            "direct_hops": direct.enabled(),
            **self.policy.describe(),
        }

    async def start(self) -> None:
        assert self.settings.nats_url and self.settings.database_url
        self.nc = await bus.connect(
            self.settings.nats_url, name=f"autellix-{self.actor}", log=self.log
        )
        js = self.nc.jetstream()
        await bus.ensure_streams(js, self.subjects)
        self.pool = await create_pool(
            self.settings.database_url,
            max_size=max(4, min(10, self.opts.concurrency)),
            application_name=f"autellix-{self.actor}",
            synchronous_commit=synchronous_commit_for("scheduler"),
        )
        # the dispatcher's own pool: key lookups and updates only, run with generic plans
        self.dispatch_pool = await create_pool(
            self.settings.database_url,
            max_size=max(2, min(8, self.opts.concurrency)),
            application_name=f"autellix-{self.actor}-dispatch",
            synchronous_commit=synchronous_commit_for("scheduler"),
            generic_plans=True,
        )
        await self.nc.subscribe(self.subjects.heartbeat, cb=self._on_heartbeat)
        self.registry.seed(await live_engines(self.pool, stale_after_s=self.opts.engine_live_s))
        self.dispatcher = Dispatcher(
            pool=self.dispatch_pool,
            nc=self.nc,
            js=js,
            subjects=self.subjects,
            registry=self.registry,
            actor=self.actor,
            log=self.log,
            policy=self.policy,
            no_engine_timeout_s=self.opts.no_engine_timeout_s,
            retry_delay_s=self.opts.retry_delay_s,
            direct=direct.enabled(),
            direct_timeout_s=direct.timeout_s(self.log),
        )
        await self.dispatcher.publisher.start()
        self.accounting = ServiceAccounting(
            pool=self.pool,
            nc=self.nc,
            subjects=self.subjects,
            policy=self.policy,
            actor=self.actor,
            log=self.log,
            fold_interval_s=self.opts.fold_interval_s,
        )
        await self.accounting.start()
        await bus.ensure_consumer(
            js,
            self.subjects.calls_stream,
            self.subjects.scheduler_durable,
            self.subjects.sched_calls,
            ack_wait=self.opts.ack_wait_s,
        )
        self.consumer = bus.PullConsumer(
            self.nc,
            self.subjects.calls_stream,
            self.subjects.scheduler_durable,
            batch=max(1, min(self.opts.concurrency * 2, 1024)),
            # short-lived pull requests: a killed replica's request stays with the server
            # until it expires, and what it is handed meanwhile waits ack_wait more
            expires=self.opts.pull_expires_s,
        )
        await self.consumer.start()
        # direct offers from frontends (`transport.direct`): one queue group for all replicas
        self._direct_sub = await self.nc.subscribe(
            self.subjects.sched_direct, queue="scheduler", cb=self._on_direct
        )
        maintenance = self.maintenance = Maintenance(
            pool=self.pool,
            js=js,
            subjects=self.subjects,
            actor=self.actor,
            log=self.log,
            interval_s=self.opts.maintenance_interval_s,
            engine_stale_s=self.opts.engine_stale_s,
            reconcile_after_s=self.opts.reconcile_after_s,
            nc=self.nc,
            policy=self.policy,
            starvation_interval_s=self.opts.starvation_interval_s,
            program_idle_ttl_s=self.opts.program_idle_ttl_s,
        )
        self.dispatcher.on_engine_gone = maintenance.suspect
        self._tasks.append(asyncio.create_task(self._consume(), name="consume"))
        self._tasks.append(asyncio.create_task(maintenance.run(), name="maintenance"))
        self._tasks.append(asyncio.create_task(self.accounting.run(), name="accounting"))

    async def _on_heartbeat(self, msg: Any) -> None:
        try:
            for hb in heartbeats_in(msg.data):
                self.registry.on_heartbeat(hb)
        except ValidationError as exc:
            self.log.warning("invalid heartbeat ignored", error=str(exc)[:300])

    async def _on_direct(self, msg: Any) -> None:
        """A ScheduleCall offered directly: handled like one from JetStream unless this replica
        already holds a backlog (then the frontend publishes it to JetStream)."""
        consumer = self.consumer
        if consumer is None or self._held + consumer.pending() >= self.opts.direct_backlog:
            self.direct_refused += 1
            await direct.refuse(self.nc, msg, "busy")
            return
        self.direct_taken += 1
        consumer.inject(direct.DirectMsg(self.nc, msg))

    async def _consume(self) -> None:
        """Form batches from whatever has arrived (one message when quiet), each message
        holding one of `concurrency` slots until its batch is done."""
        consumer = self.consumer
        assert consumer is not None
        limit = max(1, min(self.opts.batch, self.opts.concurrency))
        while True:  # ends by cancellation (stop); no per-message timeout task
            first = await consumer.next(None)
            if first is None:
                continue
            await self._sem.acquire()
            batch = [first]
            while len(batch) < limit and consumer.pending() and not self._sem.locked():
                msg = await consumer.next(None)
                if msg is None:
                    break
                await self._sem.acquire()
                batch.append(msg)
            self._held += len(batch)
            task = asyncio.create_task(self._handle(batch))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    async def _handle(self, batch: list[Any]) -> None:
        assert self.dispatcher is not None
        try:
            await self.dispatcher.handle_batch(batch)
        except Exception as exc:
            # leave them un-acked: JetStream redelivers after ack_wait (Postgres/NATS hiccup)
            if db_unavailable(exc):  # Postgres restarting: expected, and retried by redelivery
                self.log.warning(
                    "dispatch failed (database unavailable); messages will be redelivered",
                    error=repr(exc),
                )
            else:
                self.log.exception("dispatch failed; messages will be redelivered", error=repr(exc))
            last = [m for m in batch if bus.delivered(m) >= bus.MAX_DELIVER]
            for msg in batch:
                if msg not in last:
                    with contextlib.suppress(Exception):
                        await msg.nak(delay=1.0)
            with contextlib.suppress(Exception):  # never redelivered: fail their calls now
                await self.dispatcher.give_up(last, ErrorCode.undeliverable, repr(exc)[:300])
        finally:
            self._held -= len(batch)
            for _ in batch:
                self._sem.release()

    async def stop(self) -> None:
        assert self.consumer is not None
        if self._direct_sub is not None:  # frontends fall back to JetStream from now on
            with contextlib.suppress(Exception):
                await self._direct_sub.unsubscribe()
        for t in self._tasks:
            t.cancel()
        left = await self.consumer.stop()
        for msg in left:  # pulled but not started: give them back now, not after ack_wait
            with contextlib.suppress(Exception):
                await msg.nak()
        if self._inflight:
            await asyncio.wait(list(self._inflight), timeout=10.0)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.accounting is not None:
            await self.accounting.stop()
        with contextlib.suppress(Exception):
            await self.nc.drain()
        await self.pool.close()
        if self.dispatch_pool is not None:
            await self.dispatch_pool.close()
        if self.dispatcher is not None:
            acc, mnt = self.accounting, self.maintenance
            self.log.info(
                "scheduler totals",
                dispatched=self.dispatcher.dispatched,
                republished=self.dispatcher.republished,
                direct_taken=self.direct_taken,
                direct_refused=self.direct_refused,
                direct_offers=dict(self.dispatcher.publisher.offers),
                batches=self.dispatcher.batches,
                reports=acc.reports if acc else 0,
                folds=acc.folds if acc else 0,
                demotions=acc.demotions if acc else 0,
                promotions=mnt.promoted if mnt else 0,
                expired_programs=mnt.expired if mnt else 0,
            )


async def build(settings: Settings, log: Any, options: SchedulerOptions) -> SchedulerService:
    return SchedulerService(settings, options, log)


def run(settings: Settings, options: SchedulerOptions) -> None:
    """Run one scheduler replica until SIGTERM (`python -m autellix.services.scheduler` parses
    the flags into `options` and calls this)."""

    async def _build(s: Settings, log: Any) -> SchedulerService:
        return await build(s, log, options)

    run_service("scheduler", _build, settings)
