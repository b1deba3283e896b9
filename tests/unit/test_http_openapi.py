"""docs/openapi.json is what the HTTP API serves: regenerate it from the code and compare.

After changing `services/frontend/http.py` or `openai_schema.py`, run
`python -m autellix.services.frontend.http docs/openapi.json`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autellix.services.frontend.http import render_openapi

DOC = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def test_committed_openapi_matches_the_code() -> None:
    assert DOC.read_text() == render_openapi(), (
        "docs/openapi.json is stale: run `python -m autellix.services.frontend.http "
        "docs/openapi.json`"
    )


def test_openapi_documents_every_endpoint_and_error_shape() -> None:
    doc = json.loads(render_openapi())
    assert doc["openapi"].startswith("3.")
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/models", "/health"):
        assert path in doc["paths"], path
    chat = doc["paths"]["/v1/chat/completions"]["post"]
    assert "text/event-stream" in chat["responses"]["200"]["content"]
    assert chat["responses"]["400"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorResponse"
    }
    assert "422" not in chat["responses"]  # bad input is a 400 in OpenAI's shape
    schemas = doc["components"]["schemas"]
    assert {"ChatCompletionRequest", "ChatCompletionChunk", "ErrorResponse"} <= set(schemas)
    assert "program_id" in schemas["ChatCompletionRequest"]["properties"]


def test_openapi_is_a_valid_openapi_3_document() -> None:
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(json.loads(DOC.read_text()))
