"""An OpenAI chat request's tools and output format → what the call carries and how its answer
is read (`OutputPlan`).

As vLLM's serving layer does it: `tool_choice` `auto` (the default with tools) lets the model
answer text or calls, read by the model family's parser; `none` renders the tools but reads no
calls; `required` and a named function make the engine's constrained decoding produce the call
JSON (`forced`); `response_format` `json_object` / `json_schema` constrain the whole answer.
Contradictions (an unknown function, two constraints at once) are a 400 naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from autellix.services.frontend.tool_parsers import (
    PARSERS,
    NamedParser,
    RequiredParser,
    StreamParser,
    default_parser,
    function_schema,
    required_schema,
)

Mode = Literal["text", "auto", "named", "required"]


class BadToolRequest(ValueError):
    """A request whose tools or format cannot be served as asked; `param` names the field."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True, slots=True)
class OutputPlan:
    """How to read one call's answer: plain text, or tool calls of the given mode."""

    mode: Mode = "text"
    parser: str = "hermes"  # for `auto`
    function: str | None = None  # for `named`

    def new_parser(self) -> StreamParser | None:
        if self.mode == "auto":
            return PARSERS[self.parser]()
        if self.mode == "named":
            assert self.function is not None
            return NamedParser(self.function)
        if self.mode == "required":
            return RequiredParser()
        return None


@dataclass(frozen=True, slots=True)
class ToolFields:
    """What the `CallRequest` carries: tools for the template, the constraint for the engine."""

    tools: list[dict[str, Any]] | None
    structured: dict[str, Any] | None
    plan: OutputPlan


def _tool_names(tools: list[dict[str, Any]]) -> list[str]:
    names = []
    for i, tool in enumerate(tools):
        fn = tool.get("function")
        if tool.get("type", "function") != "function" or not isinstance(fn, dict):
            raise BadToolRequest(f"tools.{i}", "only tools of type 'function' are supported")
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            raise BadToolRequest(f"tools.{i}.function.name", "every function needs a name")
        params = fn.get("parameters")
        if params is not None and not isinstance(params, dict):
            raise BadToolRequest(f"tools.{i}.function.parameters", "must be a JSON Schema object")
        names.append(name)
    return names


def _response_format(fmt: dict[str, Any] | None) -> dict[str, Any] | None:
    kind = (fmt or {}).get("type") or "text"
    if kind == "text":
        return None
    if kind == "json_object":
        return {"json_object": True}
    if kind == "json_schema":
        spec = (fmt or {}).get("json_schema") or {}
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise BadToolRequest("response_format.json_schema.schema", "a JSON Schema is needed")
        return {"json_schema": schema}
    raise BadToolRequest("response_format", f"unknown response_format type {kind!r}")


def tool_fields(
    tools: list[dict[str, Any]] | None,
    tool_choice: str | dict[str, Any] | None,
    parallel_tool_calls: bool | None,
    response_format: dict[str, Any] | None,
    *,
    model: str,
    parser: str | None,
) -> ToolFields:
    """The call's tools and constraint, and how to read its answer (see the module docstring)."""
    structured = _response_format(response_format)
    family = parser or default_parser(model)
    if not tools:
        if tool_choice not in (None, "none", "auto"):
            raise BadToolRequest("tool_choice", "tool_choice needs tools")
        return ToolFields(None, structured, OutputPlan())
    names = _tool_names(tools)
    choice = tool_choice if tool_choice is not None else "auto"
    if choice == "none":
        return ToolFields(tools, structured, OutputPlan())
    if choice == "auto":
        return ToolFields(tools, structured, OutputPlan("auto", family))
    if structured is not None:
        raise BadToolRequest(
            "response_format", "response_format cannot be combined with a forced tool_choice"
        )
    if choice == "required":
        schema = required_schema(tools, parallel_tool_calls)
        return ToolFields(tools, {"json_schema": schema}, OutputPlan("required", family))
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        if choice.get("type", "function") != "function" or name not in names:
            raise BadToolRequest(
                "tool_choice", f"tool_choice names function {name!r}, which is not in tools"
            )
        schema = function_schema(tools[names.index(name)])
        return ToolFields(tools, {"json_schema": schema}, OutputPlan("named", family, name))
    raise BadToolRequest("tool_choice", f"unknown tool_choice {choice!r}")
