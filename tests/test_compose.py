"""compose.yaml must be a valid Compose Specification file that starts in the right order and
runs commands that exist (each is run with `--help`).

There is no Docker engine on CI machines, so we validate against the Compose Specification JSON
schema (vendored by check-jsonschema, kept current upstream) and check the wiring by reading.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
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


# --------------------------------------------------------------------------- commands exist


def _argv(command: list[str]) -> list[str]:
    """A compose/Dockerfile command as this machine runs it: `${VAR:-default}` → default, the
    interpreter → this one, `autellix` → `python -m autellix.cli`."""
    out = [re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}", r"\1", part) for part in command]
    if out[0] in ("python", "python3"):
        return [sys.executable, *out[1:]]
    if out[0] == "autellix":
        return [sys.executable, "-m", "autellix.cli", *out[1:]]
    raise AssertionError(f"unexpected program {out[0]!r} in {command}")


def _our_commands(compose: dict) -> dict[str, list[str]]:
    """Every command our images run: compose service commands and the Dockerfile's CMDs."""
    commands = {
        name: svc["command"]
        for name, svc in compose["services"].items()
        if "build" in svc and "command" in svc
    }
    for i, line in enumerate((ROOT / "Dockerfile").read_text().splitlines()):
        if line.startswith("CMD ["):
            commands[f"Dockerfile CMD #{i}"] = json.loads(line[len("CMD ") :])
    return commands


def test_every_service_command_exists_with_its_flags(compose: dict) -> None:
    """Run each command with `--help` appended: the module must exist and every flag the file
    passes must be known (click rejects an unknown option before it handles --help)."""
    commands = _our_commands(compose)
    assert {"migrate", "frontend", "scheduler", "engine-sim", "engine-vllm"} <= set(commands)
    for name, command in commands.items():
        argv = [*_argv(command), "--help"]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"{name}: {' '.join(command)}\n{proc.stderr[-2000:]}"
        assert "Usage" in proc.stdout, f"{name}: no usage text"


def test_frontend_serves_http_with_a_health_check(compose: dict) -> None:
    fe = compose["services"]["frontend"]
    cmd = fe["command"]
    port = cmd[cmd.index("--http-port") + 1]
    assert cmd[cmd.index("--http-host") + 1] == "0.0.0.0"  # reachable from outside the container
    assert f"{port}:{port}" in fe["ports"]
    probe = " ".join(fe["healthcheck"]["test"])
    assert f"localhost:{port}/health" in probe


def test_services_export_telemetry_from_the_standard_environment(compose: dict) -> None:
    env = compose["services"]["scheduler"]["environment"]
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318"
    assert env["OTEL_TRACES_EXPORTER"] == "otlp"
    assert "4318:4318" in compose["services"]["jaeger"]["ports"]


def test_an_unknown_flag_would_be_caught() -> None:
    """The check above can fail: a misspelt flag is an error even with --help."""
    argv = [sys.executable, "-m", "autellix.services.frontend", "--http-prot", "8000", "--help"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "http-prot" in proc.stderr
