"""Encoding dashboard snapshots as JSON, each finished call only once.

Why: a snapshot holds up to `AUTELLIX_UI_MAX_CALLS` calls, most of them finished, and a finished
call looks the same in every snapshot (`ui_view.call_view`). Deriving and encoding all of them
every poll was most of the snapshot's cost (about 20 ms of CPU for 500 calls); keeping each
finished call's encoded JSON makes a poll cost what changed: the unfinished calls, the new ones,
programs and engines.
"""

from __future__ import annotations

import json
from typing import Any

from autellix.services.frontend.ui_view import TERMINAL, SnapshotParts

_COMPACT = {"separators": (",", ":"), "default": str}


class SnapshotEncoder:
    """Turns `SnapshotParts` into the JSON text sent to browsers, caching finished calls."""

    def __init__(self) -> None:
        self._done: dict[str, str] = {}  # call id -> its encoded view, for terminal calls

    @property
    def cached(self) -> int:
        return len(self._done)

    def encode(self, parts: SnapshotParts, extra: dict[str, Any]) -> str:
        """The snapshot as JSON: `parts.head`, `extra` (the feed's own fields), and the calls."""
        pieces: list[str] = []
        keep: dict[str, str] = {}
        for c in parts.rows.calls:
            terminal = c["status"] in TERMINAL
            text = self._done.get(c["id"]) if terminal else None
            if text is None:
                text = json.dumps(parts.call(c), **_COMPACT)
            if terminal:
                keep[c["id"]] = text
            pieces.append(text)
        self._done = keep  # calls that left the window are forgotten
        head = json.dumps({**parts.head, **extra}, **_COMPACT)
        return f'{head[:-1]},"calls":[{",".join(pieces)}]}}'
