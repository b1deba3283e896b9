"""The engine runner's shared state and configuration (the job modules read and change it).

`EngineRunner` (`runner.py`) is this state plus one mixin per job; every mixin derives from
`RunnerState`, so each job module can see, with its types, what the others keep.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from autellix.backends.base import Backend
from autellix.services.engine.call import EngineCall
from autellix.services.engine.otel_hooks import NoTelemetry, otel_installed
from autellix.services.engine.queues import LevelQueues
from autellix.services.engine.tracing import EngineTelemetry
from autellix.wire.protocol import Control, EngineInfo, Subjects


@dataclass
class RunnerConfig:
    """How the runner streams, preempts and records starts (the engine's flags set some)."""

    delta_interval_s: float = 0.02
    delta_max_tokens: int = 64
    preemption: bool = True
    max_inflight_preemptions: int = 1
    final_token_ids: bool = True
    # seconds the engine gathers call starts before writing them in one statement (None: one
    # `mark_running` round trip before each generation, the old behaviour)
    start_batch_s: float | None = 0.002


class RunnerState:
    """What one engine knows about its calls: the calls it holds, the waiting queues, the running
    set, pending start records, counters. Methods live in the job modules."""

    def __init__(
        self,
        *,
        backend: Backend,
        pool: Any,
        nc: NATS,
        js: JetStreamContext,
        subjects: Subjects,
        engine_id: str,
        log: Any,
        config: RunnerConfig | None = None,
    ) -> None:
        self.backend = backend
        self.pool = pool
        self.nc = nc
        self.js = js
        self.subjects = subjects
        self.engine_id = engine_id
        self.log = log
        self.cfg = config or RunnerConfig()
        self.calls: dict[str, EngineCall] = {}
        self.queues = LevelQueues()
        self.running: set[EngineCall] = set()
        self.closing = False
        self._recent: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._early: OrderedDict[str, Control] = OrderedDict()  # see `control`
        self._preempting = 0
        self._last_flush: dict[str, float] = {}
        # deferred starts (see `_start_writer`): calls whose start is not written yet, the
        # starts being written now, calls not yet known to be ours, each segment's start time
        self._start_pending: dict[str, EngineCall] = {}
        self._start_inflight: dict[str, asyncio.Future[bool]] = {}
        self._unconfirmed: set[str] = set()
        self._seg_t0: dict[str, float] = {}
        self._start_wake = asyncio.Event()
        self._start_task: asyncio.Task[None] | None = None
        self.finished = 0
        self.failed = 0
        self.preemptions = 0
        #: a Postgres outage was seen (a transition retried, a save or heartbeat failed) and
        #: the sweep that follows one has not run yet (`EngineService._sweep_after_outage`)
        self.db_outage = False
        # Called once when the backend itself dies (e.g. vLLM's engine core was killed): the
        # service stops taking calls and exits non-zero; see `_backend_died`.
        self.on_backend_dead: Callable[[str], None] | None = None
        self.info = EngineInfo(engine_id=engine_id, backend=backend.name, model=backend.model)
        # spans of each call's engine phases and the engine metrics, when an OpenTelemetry SDK
        # is installed; else hooks that do nothing (the API's no-op spans still cost a third of
        # an idle engine's CPU per Dispatch taken: profiled in bench/overhead)
        self.otel: Any = EngineTelemetry(self) if otel_installed() else NoTelemetry()
