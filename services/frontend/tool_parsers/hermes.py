"""The Hermes / Qwen tool-call form: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`.

Modelled on vLLM's `hermes_tool_parser`: text outside the tags is content, each tagged JSON
object is one call, an unterminated last tag is parsed at the end (the model stopped on
`max_tokens` or EOS inside it). A tag whose body is not a tool call stays content, as written.
Streamed, content is sent as it comes except a trailing piece that may be the start of a tag;
a call is sent whole (name and arguments in one event) once its closing tag arrives.
"""

from __future__ import annotations

import json

from autellix.services.frontend.tool_parsers.base import (
    Event,
    StreamParser,
    call_from_json,
    held_prefix,
)

START, END = "<tool_call>", "</tool_call>"


class HermesParser(StreamParser):
    def __init__(self) -> None:
        super().__init__()
        self.buf = ""
        self.inside = False

    def feed(self, text: str) -> list[Event]:
        self.buf += text
        out: list[Event] = []
        while True:
            if not self.inside:
                i = self.buf.find(START)
                if i >= 0:
                    if i:
                        out.append(Event(content=self.buf[:i]))
                    self.buf, self.inside = self.buf[i + len(START) :], True
                    continue
                keep = held_prefix(self.buf, START)
                if len(self.buf) > keep:
                    out.append(Event(content=self.buf[: len(self.buf) - keep]))
                    self.buf = self.buf[len(self.buf) - keep :]
                return out
            j = self.buf.find(END)
            if j < 0:
                return out
            out.append(self._body(self.buf[:j], closed=True))
            self.buf, self.inside = self.buf[j + len(END) :], False

    def finish(self) -> list[Event]:
        rest, self.buf = self.buf, ""
        if self.inside:
            self.inside = False
            return [self._body(rest, closed=False)]
        return [Event(content=rest)] if rest else []

    def _body(self, body: str, closed: bool) -> Event:
        try:
            call = call_from_json(json.loads(body))
        except json.JSONDecodeError:
            call = None
        if call is None:  # not a tool call: the text stays content, tags and all
            return Event(content=START + body + (END if closed else ""))
        return self._call(call.name or "", call.arguments)
