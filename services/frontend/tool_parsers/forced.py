"""Answers whose shape the engine enforced by constrained decoding (`tool_choice` naming a
function, or `required`), read as vLLM's serving layer reads them.

* A named function: the whole answer is that function's arguments (a JSON object valid against
  its parameter schema). Streamed, the call's name comes first, then the text as arguments.
* `required`: the answer is a JSON array of `{"name": ..., "parameters": {...}}`, one per call
  (the envelope `required_schema` builds). Streamed, each call is sent once its item is complete.
"""

from __future__ import annotations

import json
from typing import Any

from autellix.services.frontend.tool_parsers.base import Event, StreamParser, call_from_json

_DECODER = json.JSONDecoder()


def function_schema(tool: dict[str, Any]) -> dict[str, Any]:
    """A tool's parameter schema (an empty object schema when it declares none)."""
    params = (tool.get("function") or {}).get("parameters")
    return params if isinstance(params, dict) and params else {"type": "object", "properties": {}}


def required_schema(tools: list[dict[str, Any]], parallel: bool | None) -> dict[str, Any]:
    """The JSON Schema of `tool_choice: "required"`: an array of one or more calls, each naming a
    tool and giving parameters valid against that tool's schema (as vLLM builds it); at most one
    call when `parallel_tool_calls` is false. `$defs` of the tools are merged at the top."""
    items = []
    defs: dict[str, Any] = {}
    for tool in tools:
        params = dict(function_schema(tool))
        defs.update(params.pop("$defs", {}) or {})
        items.append(
            {
                "properties": {
                    "name": {"type": "string", "enum": [tool["function"]["name"]]},
                    "parameters": params,
                },
                "required": ["name", "parameters"],
            }
        )
    schema: dict[str, Any] = {
        "type": "array",
        "minItems": 1,
        "items": {"type": "object", "anyOf": items},
    }
    if parallel is False:
        schema["maxItems"] = 1
    if defs:
        schema["$defs"] = defs
    return schema


class NamedParser(StreamParser):
    """The answer is the arguments of the one named function."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def feed(self, text: str) -> list[Event]:
        if self.calls == 0:
            return [self._call(self.name, text)]
        return [Event(index=0, arguments=text)] if text else []

    def finish(self) -> list[Event]:
        return [self._call(self.name, "")] if self.calls == 0 else []


class RequiredParser(StreamParser):
    """The answer is a JSON array of calls."""

    def __init__(self) -> None:
        super().__init__()
        self.buf = ""
        self.opened = False
        self.failed = False

    def feed(self, text: str) -> list[Event]:
        self.buf += text
        out: list[Event] = []
        while not self.failed:
            rest = self.buf.lstrip()
            if not self.opened:
                if not rest:
                    return out
                if not rest.startswith("["):
                    self.failed = True
                    break
                self.opened, rest = True, rest[1:]
            rest = rest.lstrip().lstrip(",").lstrip()
            self.buf = rest
            if not rest or rest.startswith("]"):
                return out
            try:
                obj, end = _DECODER.raw_decode(rest)
            except json.JSONDecodeError:
                return out
            call = call_from_json(obj, ("parameters", "arguments"))
            if call is None:
                self.failed = True
                break
            out.append(self._call(call.name or "", call.arguments))
            self.buf = rest[end:]
        return out

    def finish(self) -> list[Event]:
        rest, self.buf = self.buf.strip(), ""
        # what could not be read as calls (cut off by max_tokens) stays visible as content
        return [Event(content=rest)] if rest and rest != "]" else []
