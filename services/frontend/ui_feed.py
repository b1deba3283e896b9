"""The dashboard's one reader per frontend replica, fanning each snapshot out to every browser.

Why one reader: the dashboard must cost the deployment the same with one browser open or fifty,
and nothing at all with none. So browsers never query Postgres themselves: each one subscribes
here (server-sent events, `ui.py`); the first subscriber starts a reader task, which reads one
bounded snapshot (`autellix.store.ui_queries`) every `poll_s` on a connection borrowed from the
frontend's pool for those few statements, encodes it once per scope being watched (everything,
or one tenant's part: `ui_scope.py`), and hands the same bytes to every subscriber of that scope:
a whole snapshot to a browser that just came, then deltas from the snapshot it has
(`ui_encode.py`: the calls that changed, not the ~350 KB of all 500 each poll); when the last
one leaves, the task ends. A slow browser only ever holds the newest snapshot (older ones are
dropped, never queued: it then gets that one whole), so it cannot make the reader wait or grow
memory.

Configuration (environment of the frontend process):

| variable | default | what |
|---|---|---|
| `AUTELLIX_UI_POLL_S` | 1.0 | seconds between snapshots (at least 0.2) |
| `AUTELLIX_UI_WINDOW_S` | 300 | calls accepted this many seconds back (and all unfinished ones) |
| `AUTELLIX_UI_MAX_CALLS` | 500 | at most this many calls of the window per snapshot |
| `AUTELLIX_UI_MAX_PROGRAMS` | 300 | at most this many programs per snapshot |
| `AUTELLIX_JAEGER_UI_URL` | unset | Jaeger's UI address (`http://localhost:16686`): trace links |
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from autellix.runtime.settings import checked_env_float
from autellix.services.frontend.ui_depth import DepthHistory
from autellix.services.frontend.ui_encode import Encoded, SnapshotEncoder
from autellix.services.frontend.ui_scope import EVERYTHING, scoped_rows
from autellix.services.frontend.ui_view import SnapshotParts
from autellix.store.ui_queries import WindowLimits, WindowRows, read_window

MIN_POLL_S = 0.2


@dataclass(frozen=True, slots=True)
class FeedConfig:
    """How often the reader polls, how much it reads, and where trace links point."""

    poll_s: float = 1.0
    limits: WindowLimits = field(default_factory=WindowLimits)
    jaeger_ui: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> FeedConfig:
        """From the `AUTELLIX_UI_*` / `AUTELLIX_JAEGER_UI_URL` variables (module doc); a value
        that does not parse is a start-up error naming the variable, not a silent default."""
        env = os.environ if env is None else env

        def num(name: str, default: float, minimum: float) -> float:
            return checked_env_float(name, default, minimum=minimum, env=env)

        limits = WindowLimits(
            window_s=num("AUTELLIX_UI_WINDOW_S", 300.0, 1.0),
            max_calls=int(num("AUTELLIX_UI_MAX_CALLS", 500, 1)),
            max_programs=int(num("AUTELLIX_UI_MAX_PROGRAMS", 300, 1)),
        )
        return cls(
            poll_s=num("AUTELLIX_UI_POLL_S", 1.0, MIN_POLL_S),
            limits=limits,
            jaeger_ui=env.get("AUTELLIX_JAEGER_UI_URL", "").strip() or None,
        )


@dataclass(frozen=True, slots=True)
class Update:
    """One poll's snapshot of a scope, encoded both ways: whole (`full`) and as a delta from
    snapshot `base` (`ui_encode.Encoded.delta`; None: no earlier snapshot, or an error)."""

    seq: int
    base: int | None
    full: str
    delta: str | None


class Subscription:
    """One browser's mailbox: holds only the newest snapshot of its `scope`
    (`ui_scope.EVERYTHING`, or a tenant's name), and knows which snapshot the browser has."""

    def __init__(self, scope: str | None = EVERYTHING) -> None:
        self.scope = scope
        self._box: asyncio.Queue[Update] = asyncio.Queue(maxsize=1)
        self.sent_seq: int | None = None  # the snapshot the browser has (None: none yet)

    def offer(self, update: Update) -> None:
        if self._box.full():
            self._box.get_nowait()  # drop the older snapshot: the browser wants the newest
        self._box.put_nowait(update)

    async def next(self, timeout_s: float) -> tuple[str, str] | None:
        """The next event, `("delta", json)` when the browser has the snapshot the delta was
        computed from, else `("snapshot", json)` (the first one, after a dropped one, after an
        error); None after `timeout_s` without one."""
        try:
            u = await asyncio.wait_for(self._box.get(), timeout_s)
        except TimeoutError:
            return None
        whole = u.delta is None or self.sent_seq is None or u.base != self.sent_seq
        self.sent_seq = u.seq
        return ("snapshot", u.full) if whole else ("delta", u.delta or "")


class DashboardFeed:
    """The reader task and its subscribers (one instance per frontend process)."""

    def __init__(self, pool: Any, config: FeedConfig, log: Any) -> None:
        self.pool = pool
        self.config = config
        self.log = log
        self.depth = DepthHistory(keep_s=max(config.limits.window_s, 60.0))
        #: one encoder per scope watched (its cache of finished calls is per scope)
        self.encoders: dict[str | None, SnapshotEncoder] = {}
        self._subs: set[Subscription] = set()
        self._task: asyncio.Task[None] | None = None
        #: per scope: (monotonic time read, its newest update)
        self._latest: dict[str | None, tuple[float, Update]] = {}
        #: per scope: the newest snapshot encoded, which the next one's delta is computed from
        self._prev: dict[str | None, Encoded] = {}
        #: snapshots read since the process started (each one a bounded read of Postgres)
        self.reads = 0

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    @property
    def reading(self) -> bool:
        return self._task is not None and not self._task.done()

    def subscribe(self, scope: str | None = EVERYTHING) -> Subscription:
        """A new mailbox for `scope`; starts the reader if it is not running. A fresh snapshot
        of that scope (read within the last poll interval) is in the mailbox at once."""
        sub = Subscription(scope)
        self._subs.add(sub)
        latest = self._latest.get(scope)
        if latest is not None and time.monotonic() - latest[0] < self.config.poll_s:
            sub.offer(latest[1])
        if not self.reading:
            self._task = asyncio.create_task(self._read_while_watched(), name="ui-reader")
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """The reader stops at its next wake-up once nobody is subscribed."""
        self._subs.discard(sub)

    async def stop(self) -> None:
        self._subs.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _read_while_watched(self) -> None:
        # no await between the check and the return: a subscriber arriving while the loop
        # decides to end either sees this task still running (and is served) or starts another
        while self._subs:
            started = time.monotonic()
            scopes = {sub.scope for sub in self._subs}
            try:
                encoded = await self._snapshot(scopes)
            except Exception as exc:  # the database is away or slow: say so, try again
                self.log.warning("dashboard snapshot failed", error=repr(exc))
                error = json.dumps({"error": f"could not read the database: {exc!r}"})
                encoded = {s: Update(seq=-1, base=None, full=error, delta=None) for s in scopes}
            else:
                now = time.monotonic()
                self._latest = {scope: (now, data) for scope, data in encoded.items()}
            for sub in list(self._subs):
                data = encoded.get(sub.scope)
                if data is not None:  # else subscribed during this read: served by the next
                    sub.offer(data)
            elapsed = time.monotonic() - started
            await asyncio.sleep(max(MIN_POLL_S / 2, self.config.poll_s - elapsed))

    async def _snapshot(self, scopes: set[str | None]) -> dict[str | None, Update]:
        rows = await read_window(self.pool, self.config.limits)
        self.reads += 1
        self.depth.add(rows.now.timestamp() * 1000.0, rows.depth)
        # encoders (and last snapshots) of scopes nobody watches any more are dropped
        self.encoders = {s: self.encoders.get(s) or SnapshotEncoder() for s in scopes}
        self._prev = {s: e for s, e in self._prev.items() if s in scopes}
        # deriving and encoding run in a worker thread, so the frontend's event loop keeps
        # admitting calls meanwhile (the GIL is handed back every few ms) instead of stalling
        encoded = await asyncio.to_thread(self._encode_scopes, rows, dict(self.encoders))
        out: dict[str | None, Update] = {}
        for scope, (enc, update) in encoded.items():
            self._prev[scope] = enc
            out[scope] = update
        return out

    def _encode_scopes(
        self, rows: WindowRows, encoders: dict[str | None, SnapshotEncoder]
    ) -> dict[str | None, tuple[Encoded, Update]]:
        depth = self.depth.series(e["id"] for e in rows.engines if e["status"] == "up")
        seq = self.reads
        feed = {"seq": seq, "poll_s": self.config.poll_s, "subscribers": self.subscribers}
        out: dict[str | None, tuple[Encoded, Update]] = {}
        for scope, encoder in encoders.items():
            seen = rows if scope is EVERYTHING else scoped_rows(rows, scope)
            parts = SnapshotParts(seen, self.config.limits, depth, self.config.jaeger_ui)
            enc = encoder.encode(parts, {"feed": feed, "scope": scope}, seq=seq)
            prev = self._prev.get(scope)
            delta = enc.delta(prev) if prev is not None else None
            update = Update(
                seq=seq, base=None if prev is None else prev.seq, full=enc.full(), delta=delta
            )
            out[scope] = (enc, update)
        return out
