"""Replies to the HTTP API's calls: one wildcard subscription routes each to its request.

Why one subscription for all: every call made by this process replies to a subject under one
inbox prefix (`<inbox>.<token>`), so a request costs a dict entry, not a NATS subscription; a
reply for a request that is gone (client disconnected) is dropped while the call completes.

Replies published while the NATS connection was down are lost, so when it comes back every
waiting request is told (`RECONNECTED` on its queue) and reads what it missed from Postgres
(`http_calls.CallRun`). The connection is the frontend's own, shared with its NATS API, so the
router watches its reconnect count instead of owning a callback.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import Any

from pydantic import ValidationError

from autellix.wire.protocol import CALL_REPLY

#: put on every waiting request's queue when the NATS connection is back
RECONNECTED = object()
RECONNECT_POLL_S = 0.2


class ReplyRouter:
    """One wildcard subscription (`<inbox>.*`) for the replies of every call of this process."""

    def __init__(self, nc: Any, log: Any) -> None:
        self.nc = nc
        self.log = log
        self.prefix: str = nc.new_inbox()
        self._queues: dict[str, asyncio.Queue[Any]] = {}
        self._ids = itertools.count()
        self._sub: Any = None
        self._watch: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(f"{self.prefix}.*", cb=self._on_msg)
        self._watch = asyncio.create_task(self._watch_reconnects())

    async def _watch_reconnects(self) -> None:
        seen = self.nc.stats.get("reconnects", 0)
        while True:
            await asyncio.sleep(RECONNECT_POLL_S)
            now = self.nc.stats.get("reconnects", 0)
            if now != seen and self.nc.is_connected:
                seen = now
                for queue in list(self._queues.values()):
                    queue.put_nowait(RECONNECTED)

    async def _on_msg(self, msg: Any) -> None:
        queue = self._queues.get(msg.subject.rsplit(".", 1)[-1])
        if queue is None:
            return  # the request is gone (client disconnected); the call still completes
        try:
            queue.put_nowait(CALL_REPLY.validate_json(msg.data))
        except ValidationError as exc:
            self.log.warning("malformed reply ignored", subject=msg.subject, error=str(exc)[:300])

    def open(self) -> tuple[str, str, asyncio.Queue[Any]]:
        token = f"h{next(self._ids):x}"
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._queues[token] = queue
        return token, f"{self.prefix}.{token}", queue

    def close(self, token: str) -> None:
        self._queues.pop(token, None)

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
