"""Tool calls out of model text: one parser per model family (`--tool-call-parser`, as in vLLM),
plus the readers of answers the engine constrained (`forced`).

`hermes` reads the Hermes / Qwen `<tool_call>{json}</tool_call>` form, `llama3_json` the
Llama-3 JSON form. Without the flag the parser follows the model name (`default_parser`).
Parsers are our own, modelled on vLLM's (`vllm/tool_parsers/`), because the frontend must run
without vLLM installed.
"""

from __future__ import annotations

from autellix.services.frontend.tool_parsers.base import (
    Event,
    Extracted,
    StreamParser,
    ToolCallOut,
    collect,
    extract,
    new_call_id,
)
from autellix.services.frontend.tool_parsers.forced import (
    NamedParser,
    RequiredParser,
    function_schema,
    required_schema,
)
from autellix.services.frontend.tool_parsers.hermes import HermesParser
from autellix.services.frontend.tool_parsers.llama3 import Llama3JsonParser

PARSERS: dict[str, type[StreamParser]] = {"hermes": HermesParser, "llama3_json": Llama3JsonParser}

__all__ = [
    "PARSERS",
    "Event",
    "Extracted",
    "HermesParser",
    "Llama3JsonParser",
    "NamedParser",
    "RequiredParser",
    "StreamParser",
    "ToolCallOut",
    "collect",
    "default_parser",
    "extract",
    "function_schema",
    "new_call_id",
    "required_schema",
]


def default_parser(model: str) -> str:
    """The parser for a model name: `llama3_json` for Llama 3.x names, else `hermes` (Qwen,
    Hermes, Mistral-style fine-tunes, and the dummy presets' own chat template)."""
    name = model.lower().replace("_", "-").replace(".", "-")
    if "llama-3" in name or "llama3" in name:
        return "llama3_json"
    return "hermes"
