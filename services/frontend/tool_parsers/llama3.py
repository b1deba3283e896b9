"""The Llama-3 JSON tool-call form: the answer *is* the calls, `{"name": ..., "parameters":
{...}}` objects (optionally after `<|python_tag|>`, several separated by `;`).

Modelled on vLLM's `llama_tool_parser` (`llama3_json`): an answer whose first non-blank
character opens a JSON object is read as calls; the leading complete objects that are calls
become tool calls and whatever follows them is content. Any other answer is plain content,
streamed as it comes. Streamed, each call is sent whole once its object is complete.
"""

from __future__ import annotations

import json

from autellix.services.frontend.tool_parsers.base import (
    Event,
    StreamParser,
    call_from_json,
    held_prefix,
)

PYTHON_TAG = "<|python_tag|>"
_DECODER = json.JSONDecoder()


class Llama3JsonParser(StreamParser):
    def __init__(self) -> None:
        super().__init__()
        self.buf = ""
        self.mode = "undecided"  # -> "calls" or "content"

    def feed(self, text: str) -> list[Event]:
        self.buf += text
        out: list[Event] = []
        if self.mode == "undecided":
            head = self.buf.lstrip()
            if head.startswith(PYTHON_TAG):
                self.buf, self.mode = head[len(PYTHON_TAG) :], "calls"
            elif head.startswith("{"):
                self.buf, self.mode = head, "calls"
            elif head and not (head.startswith("<") and held_prefix(head, PYTHON_TAG) == len(head)):
                self.mode = "content"
            else:
                return out
        if self.mode == "calls":
            out.extend(self._objects())
        if self.mode == "content" and self.buf:
            out.append(Event(content=self.buf))
            self.buf = ""
        return out

    def _objects(self) -> list[Event]:
        out: list[Event] = []
        while True:
            rest = self.buf.lstrip().lstrip(";").lstrip()
            if not rest:
                self.buf = rest
                return out
            if not rest.startswith("{"):
                self.buf, self.mode = rest, "content"
                return out
            try:
                obj, end = _DECODER.raw_decode(rest)
            except json.JSONDecodeError:
                self.buf = rest  # incomplete so far
                return out
            call = call_from_json(obj)
            if call is None:
                self.buf, self.mode = rest, "content"
                return out
            out.append(self._call(call.name or "", call.arguments))
            self.buf = rest[end:]

    def finish(self) -> list[Event]:
        rest, self.buf = self.buf, ""
        return [Event(content=rest)] if rest.strip() else []
