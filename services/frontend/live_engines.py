"""Which engines (and models) are live, and the one rule that refuses a call for a model none
of them serves: shared by the NATS accept path (`accept.py`) and the HTTP API (`/v1/models`,
`/health`, the 404 for an unknown model), so both answer from the same view.

Built from the heartbeats every engine publishes each `HEARTBEAT_INTERVAL_S`, so the frontend
needs no query per call (one at start, to bound the start-up grace below): an engine unheard
for `ENGINE_LIVE_S` seconds no longer counts.

The refusal rule (`refusal`): a call naming a `model` is refused with `model_not_found` when at
least one engine is live and none of the live engines serves that name. Not refused:
- a call with no `model` (any engine may run it);
- any call while no engine is live at all: it waits for one, as a call does when every engine
  is restarting, and the scheduler answers `no_engine` if none comes;
- any call while the view may still be partial after start: until this frontend has heard
  every engine the engines table listed as live when it started, and at most `START_GRACE_S`
  (two heartbeat intervals, time enough for every running engine to be heard). Without it, a
  call for a model served by an engine not yet heard would be refused wrongly; with the table's
  list the grace ends as soon as the view is complete (at once when no engine was running).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from pydantic import ValidationError

from autellix.store.engines import live_engines
from autellix.wire.protocol import CallError, EngineHeartbeat, ErrorCode, Subjects, heartbeats_in

#: how often engines heartbeat (the engine's `--heartbeat-interval` default)
HEARTBEAT_INTERVAL_S = 1.0
#: an engine unheard for this long is no longer live
ENGINE_LIVE_S = 5.0
#: after start, no call is refused for its model for this long (the view is still filling)
START_GRACE_S = 2 * HEARTBEAT_INTERVAL_S


class EngineDirectory:
    """Live engines and their models, from the heartbeats every engine publishes."""

    def __init__(self, nc: Any, subjects: Subjects, grace_s: float = START_GRACE_S) -> None:
        """`grace_s`: the longest start-up grace (module docstring)."""
        self.nc = nc
        self.subjects = subjects
        self.grace_s = grace_s
        self._seen: dict[str, tuple[float, EngineHeartbeat]] = {}
        self._sub: Any = None
        self._started_at: float | None = None
        #: engines live in the engines table at start, not yet heard: the view is partial
        self._unheard: set[str] = set()

    async def start(self, pool: Any = None) -> None:
        """Listen to heartbeats; with `pool`, also note which engines the table lists as live,
        so the start-up grace ends once each of them is heard."""
        self._started_at = time.monotonic()
        self._sub = await self.nc.subscribe(self.subjects.heartbeat, cb=self._on_heartbeat)
        if pool is not None:
            async with pool.acquire() as conn:
                rows = await live_engines(conn, stale_after_s=ENGINE_LIVE_S)
            self._unheard = {row.id for row in rows} - self._seen.keys()

    async def _on_heartbeat(self, msg: Any) -> None:
        with contextlib.suppress(ValidationError):
            now = time.monotonic()
            for hb in heartbeats_in(msg.data):
                self._seen[hb.engine_id] = (now, hb)
                self._unheard.discard(hb.engine_id)

    def live(self) -> list[EngineHeartbeat]:
        now = time.monotonic()
        return [hb for seen, hb in self._seen.values() if now - seen <= ENGINE_LIVE_S]

    def served(self) -> list[str]:
        """The model names the live engines serve, sorted."""
        return sorted({name for hb in self.live() for name in hb.names()})

    def refusal(self, model: str | None) -> CallError | None:
        """`model_not_found` if a call for `model` must be refused now (module docstring), or
        None to accept it."""
        if model is None or self._started_at is None:
            return None
        if self._unheard and time.monotonic() - self._started_at < self.grace_s:
            return None
        served = self.served()
        if not served or model in served:
            return None
        return CallError(
            code=ErrorCode.model_not_found,
            message=f"the model {model!r} does not exist here; served: {', '.join(served)}",
            details=[{"loc": "model", "msg": "no live engine serves this model"}],
        )

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
