"""The JSON Schemas published in docs/schemas/ must match the code, and must describe real messages.

Other languages build against those files, so a drift between them and the pydantic models would
break clients silently.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import pytest

from autellix.wire import protocol
from autellix.wire.schema_export import render

DOCS = Path(__file__).resolve().parents[2] / "docs" / "schemas"


@pytest.mark.parametrize("name", sorted(render()))
def test_committed_schema_matches_code(name: str) -> None:
    committed = DOCS / name
    assert committed.exists(), f"{committed} missing: run python -m autellix.wire.schema_export"
    assert committed.read_text() == render()[name], (
        f"{name} is stale: run `python -m autellix.wire.schema_export docs/schemas`"
    )


def _schema(stem: str) -> dict:
    return json.loads((DOCS / f"{stem}.schema.json").read_text())


def test_schema_accepts_what_the_code_emits_and_rejects_bad_requests() -> None:
    req = {"program_id": "p1", "prompt": "hello", "sampling": {"max_tokens": 8}}
    jsonschema.validate(req, _schema("call_request"))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"program_id": "p1", "prompt": 3}, _schema("call_request"))
    now = datetime.now(UTC)
    final = protocol.CallFinal(
        call_id="c1",
        program_id="p1",
        finish_reason="length",
        usage=protocol.Usage(prompt_tokens=3, completion_tokens=8),
        timing=protocol.Timing(accepted_at=now, finished_at=now, queue_s=0.0, run_s=0.0),
        engine=protocol.EngineInfo(engine_id="e0", backend="sim", model="simulated"),
    )
    emitted = json.loads(protocol.encode(final))
    jsonschema.validate(emitted, _schema("call_final"))
    jsonschema.validate(emitted, _schema("call_reply"))
    err = json.loads(protocol.encode(protocol.CallError(code="timeout", message="x")))
    jsonschema.validate(err, _schema("call_reply"))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(
            {"type": "error", "code": "nope", "message": "x"}, _schema("call_error")
        )
