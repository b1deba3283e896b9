"""compose.yaml must be a valid Compose Specification file that starts in the right order.

There is no Docker engine on CI machines, so we validate against the Compose Specification JSON
schema (vendored by check-jsonschema, kept current upstream) and check the wiring by reading.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def test_compose_matches_the_compose_specification(compose: dict) -> None:
    schema_file = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(schema_file.read_text())
    jsonschema.validate(compose, schema)


def test_required_services_and_start_order(compose: dict) -> None:
    services = compose["services"]
    for name in ("nats", "postgres", "migrate", "frontend", "scheduler", "jaeger"):
        assert name in services, name
    assert any(n.startswith("engine") for n in services)
    assert services["scheduler"]["deploy"]["replicas"] == 2
    for name in ("frontend", "scheduler", "engine-sim", "engine-vllm"):
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully", name
        assert deps["nats"]["condition"] == "service_healthy", name
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "healthcheck" in services["nats"] and "healthcheck" in services["postgres"]
    gpu = services["engine-vllm"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"]
    assert "sim" in services["engine-sim"]["profiles"]


def test_nats_config_enables_jetstream_and_auth(compose: dict) -> None:
    conf = (ROOT / compose["configs"]["nats-conf"]["file"]).read_text()
    assert "jetstream" in conf and "authorization" in conf
