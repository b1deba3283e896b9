"""docs/asyncapi.yaml is generated from the code and must not drift from it."""

from __future__ import annotations

from pathlib import Path

import yaml

from autellix.wire.asyncapi import build, render
from autellix.wire.protocol import Subjects

DOC = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.yaml"


def test_committed_asyncapi_is_current() -> None:
    assert DOC.read_text() == render(), (
        "stale: run python -m autellix.wire.asyncapi docs/asyncapi.yaml"
    )


def test_every_subject_and_message_is_described() -> None:
    doc = yaml.safe_load(DOC.read_text())
    assert doc["asyncapi"].startswith("3.")
    addresses = {c["address"] for c in doc["channels"].values() if c["address"]}
    s = Subjects()
    for subject in (
        s.submit,
        s.program_open,
        s.program_close,
        s.sched_calls,
        s.heartbeat,
        s.reports,
    ):
        assert subject in addresses
    schemas = doc["components"]["schemas"]
    for message in doc["components"]["messages"].values():
        ref = message["payload"]["$ref"].rsplit("/", 1)[1]
        assert ref in schemas, ref
    # every $ref in the document resolves
    text = DOC.read_text()
    for line in text.splitlines():
        if "$ref: '#/components/schemas/" in line or "$ref: '#/components/messages/" in line:
            target = line.split("'#/")[1].rstrip("'").split("/")
            node = doc
            for part in target:
                node = node[part]


def test_namespace_changes_addresses() -> None:
    assert build("acme")["channels"]["submit"]["address"] == "acme.v1.call.submit"
