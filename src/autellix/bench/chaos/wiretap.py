"""Count every answer (`CallFinal` or `CallError`) published to a caller, per call id, and
how many of them differ.

Why on the wire and not in the client: the client stops listening to a call once it has its
answer, so a second final sent to the same inbox would pass unseen there. A connection of its
own subscribed to every inbox sees what the engines actually published. (The embedded stack's
bus has no permissions that forbid this; on a secured bus, run it with a monitoring user.)
Messages published while NATS is down reach nobody, this tap included: those are the ones the
client recovers from Postgres, and they cannot be answers twice.
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from typing import Any

__all__ = ["AnswerTap"]


class AnswerTap:
    """Subscribes to `_INBOX.>` and counts the answers per call id."""

    def __init__(self) -> None:
        self.answers: Counter[str] = Counter()
        #: what each answer was, per call id ("final:<finish_reason>@<engine>", "error:<code>")
        self.kinds: dict[str, list[str]] = {}
        #: the distinct answers per call id: copies of one answer (a resend under the same client
        #: call id is answered with the stored final, as the protocol says) are one answer
        self.distinct: dict[str, set[str]] = {}
        self.deltas = 0
        self._nc: Any = None

    async def start(self, nats_url: str) -> None:
        import nats

        async def quiet(_exc: Exception) -> None:
            """Outages are the point of the run: the tap reconnects without a traceback."""

        self._nc = await nats.connect(
            nats_url,
            name="autellix-chaos-tap",
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.25,
            error_cb=quiet,
        )
        await self._nc.subscribe("_INBOX.>", cb=self._on_msg)

    async def _on_msg(self, msg: Any) -> None:
        head = msg.data[:24]  # replies are encoded with their `type` first
        if head.startswith(b'{"type":"delta"'):
            self.deltas += 1
            return
        if not head.startswith((b'{"type":"final"', b'{"type":"error"')):
            return
        data = msg.data
        with contextlib.suppress(ValueError):
            body = json.loads(data)
            call_id = body.get("call_id")
            if body.get("type") in ("final", "error") and call_id:
                self.answers[call_id] += 1
                if body["type"] == "final":
                    engine = (body.get("engine") or {}).get("engine_id")
                    kind = f"final:{body.get('finish_reason')}@{engine}"
                else:
                    kind = f"error:{body.get('code')}"
                self.kinds.setdefault(call_id, []).append(kind)
                content = {k: body.get(k) for k in ("type", "code", "finish_reason", "token_ids")}
                self.distinct.setdefault(call_id, set()).add(json.dumps(content, sort_keys=True))

    async def close(self) -> None:
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()
            self._nc = None
