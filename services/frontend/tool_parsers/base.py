"""What every tool-call parser produces, streamed or not, and the one machine both use.

A parser reads the model's text as it arrives (`feed`) and says what it is: assistant content,
or the start / arguments of the i-th tool call (`Event`). The non-streamed answer is the same
parser run over the whole text (`extract`), so a streamed answer and a non-streamed one of the
same text always carry the same tool calls, however the text was split into pieces.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any


def new_call_id() -> str:
    """An id for a tool call, in OpenAI's `call_...` form."""
    return "call_" + uuid.uuid4().hex[:24]


@dataclass(frozen=True, slots=True)
class Event:
    """A piece of the answer: `content` text, or (`index` set) part of tool call `index`: its
    `name` on the call's first event, then fragments of its JSON `arguments` text."""

    content: str | None = None
    index: int | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(slots=True)
class ToolCallOut:
    """A whole tool call: function name and arguments as JSON text (OpenAI's shape)."""

    name: str
    arguments: str
    id: str = field(default_factory=new_call_id)


@dataclass(slots=True)
class Extracted:
    """A whole answer: the content (None when there is none) and the tool calls."""

    content: str | None
    calls: list[ToolCallOut]


class StreamParser:
    """Base of the parsers: `feed` text pieces, then `finish`; both return events."""

    def __init__(self) -> None:
        self.calls = 0  # tool calls started so far (the next call's index)

    def feed(self, text: str) -> list[Event]:
        raise NotImplementedError

    def finish(self) -> list[Event]:
        return []

    def _call(self, name: str, arguments: str) -> Event:
        event = Event(index=self.calls, name=name, arguments=arguments)
        self.calls += 1
        return event


def call_from_json(
    obj: Any, args_keys: tuple[str, ...] = ("arguments", "parameters")
) -> Event | None:
    """`(name, arguments JSON text)` of a decoded `{"name": ..., "arguments": {...}}`, as an event
    without an index (the caller numbers it); None when `obj` is not a tool call."""
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not obj["name"]:
        return None
    args: Any = {}
    for key in args_keys:
        if key in obj:
            args = obj[key]
            break
    text = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
    return Event(name=obj["name"], arguments=text)


def extract(parser: StreamParser, text: str) -> Extracted:
    """The whole answer `text` through `parser`: content and tool calls."""
    events = parser.feed(text) + parser.finish()
    return collect(events)


def collect(events: list[Event]) -> Extracted:
    """Events merged into an answer (content joined and stripped, each call's fragments joined)."""
    content = "".join(e.content for e in events if e.content is not None).strip()
    calls: dict[int, ToolCallOut] = {}
    for e in events:
        if e.index is None:
            continue
        if e.index not in calls:
            calls[e.index] = ToolCallOut(name=e.name or "", arguments="")
        calls[e.index].arguments += e.arguments
    return Extracted(content or None, [calls[i] for i in sorted(calls)])


def held_prefix(text: str, marker: str) -> int:
    """Length of the longest end of `text` that starts `marker` (held back: it may be one)."""
    for k in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-k:]):
            return k
    return 0
