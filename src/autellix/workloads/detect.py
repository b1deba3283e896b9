"""Detect what a `--data` file is from its first record, never from its name alone.

sharegpt:  a JSON array (or JSON Lines) whose records have `conversations`
bfcl:      JSON Lines (or an array) whose records have `question` and `function`/`involved_classes`
tokenizer: a Hugging Face tokenizer.json (one object with `model` and `added_tokens`/`normalizer`)
Only the first record is parsed, so detecting the 650 MB ShareGPT file is instant.
"""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path
from typing import Any

from autellix.workloads.streaming import iter_json_array

FORMATS = ("sharegpt", "bfcl", "tokenizer")


def _kind_of_record(rec: Any) -> str | None:
    if not isinstance(rec, dict):
        return None
    if "conversations" in rec:
        return "sharegpt"
    if "question" in rec and ("function" in rec or "involved_classes" in rec or "id" in rec):
        return "bfcl"
    return None


def detect_format(path: str | Path) -> str:
    """One of FORMATS; raises ValueError with what was seen when it is none of them."""
    path = Path(path)
    with path.open("rb") as f:
        head = f.read(1 << 16)
    text = head.decode("utf-8", "replace").lstrip()
    if not text:
        raise ValueError(f"{path}: empty file")
    kind: str | None = None
    if text.startswith("["):
        first = next(islice(iter_json_array(path), 1), None)
        kind = _kind_of_record(first)
    elif text.startswith("{"):
        line = text.split("\n", 1)[0]
        try:
            kind = _kind_of_record(json.loads(line))
        except json.JSONDecodeError:
            kind = None
        if (
            kind is None
            and '"model"' in text
            and ('"added_tokens"' in text or '"normalizer"' in text)
        ):
            kind = "tokenizer"
    if kind is None:
        raise ValueError(
            f"{path}: unrecognised format (expected a ShareGPT JSON array of "
            "{{id, conversations}}, BFCL JSON Lines with question/function/involved_classes, "
            "or a tokenizer.json)"
        )
    return kind
