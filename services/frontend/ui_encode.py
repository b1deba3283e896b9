"""Encoding dashboard snapshots as JSON, each finished call only once, and deltas between them.

Why cache: a snapshot holds up to `AUTELLIX_UI_MAX_CALLS` calls, most of them finished, and a
finished call looks the same in every snapshot (`ui_view.call_view`). Deriving and encoding all of
them every poll was most of the snapshot's cost (about 20 ms of CPU for 500 calls); keeping each
finished call's encoded JSON makes a poll cost what changed: the unfinished calls, the new ones,
programs and engines.

Why deltas: the same reasoning on the wire. A whole snapshot of 500 calls is ~350 KB, sent to
every open tab every poll, and most of it is the calls the tab already has. A browser that has
snapshot `base` gets a `delta` instead: the snapshot's head (engines, programs, queue depths,
critical paths: all of it, it changes every poll), the ids of the calls in view in order, and
only the calls whose JSON differs from `base`'s. `apply_delta` is the rule (the page's
`ui/src/main.js` applies it the same way): the calls are the ids in order, each the delta's copy
if it carries one, else the one the browser had.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from autellix.services.frontend.ui_view import TERMINAL, SnapshotParts

_COMPACT = {"separators": (",", ":"), "default": str}


@dataclass(frozen=True, slots=True)
class Encoded:
    """One snapshot as JSON pieces: its head object (without `calls`), the calls' ids in order
    and each call's JSON text."""

    seq: int
    head: str
    ids: tuple[str, ...]
    texts: dict[str, str]

    def full(self) -> str:
        """The whole snapshot: the head with every call."""
        calls = ",".join(self.texts[i] for i in self.ids)
        return f'{self.head[:-1]},"calls":[{calls}]}}'

    def delta(self, base: Encoded) -> str:
        """What turns snapshot `base` into this one (`apply_delta`): the head, `base`'s seq, the
        ids in order, and the calls whose JSON is not the same as in `base`."""
        changed = ",".join(self.texts[i] for i in self.ids if base.texts.get(i) != self.texts[i])
        ids = json.dumps(list(self.ids), separators=(",", ":"))
        return f'{self.head[:-1]},"base":{base.seq},"ids":{ids},"upsert":[{changed}]}}'


def apply_delta(snapshot: dict[str, Any], delta: dict[str, Any]) -> dict[str, Any]:
    """The snapshot a `delta` event makes of the one it was computed from (`delta["base"]` is
    that snapshot's `feed.seq`). Raises ValueError when it was computed from another one."""
    if snapshot.get("feed", {}).get("seq") != delta["base"]:
        raise ValueError(f"delta from snapshot {delta['base']}, not from this one")
    had = {c["id"]: c for c in snapshot["calls"]}
    new = {c["id"]: c for c in delta["upsert"]}
    out = {k: v for k, v in delta.items() if k not in ("base", "ids", "upsert")}
    out["calls"] = [new[i] if i in new else had[i] for i in delta["ids"]]
    return out


class SnapshotEncoder:
    """Turns `SnapshotParts` into `Encoded` snapshots, caching finished calls' JSON."""

    def __init__(self) -> None:
        self._done: dict[str, str] = {}  # call id -> its encoded view, for terminal calls

    @property
    def cached(self) -> int:
        return len(self._done)

    def encode(self, parts: SnapshotParts, extra: dict[str, Any], seq: int = 0) -> Encoded:
        """The snapshot `seq`: `parts.head`, `extra` (the feed's own fields), and the calls."""
        ids: list[str] = []
        texts: dict[str, str] = {}
        keep: dict[str, str] = {}
        for c in parts.rows.calls:
            terminal = c["status"] in TERMINAL
            text = self._done.get(c["id"]) if terminal else None
            if text is None:
                text = json.dumps(parts.call(c), **_COMPACT)
            if terminal:
                keep[c["id"]] = text
            ids.append(c["id"])
            texts[c["id"]] = text
        self._done = keep  # calls that left the window are forgotten
        head = json.dumps({**parts.head, **extra}, **_COMPACT)
        return Encoded(seq=seq, head=head, ids=tuple(ids), texts=texts)
