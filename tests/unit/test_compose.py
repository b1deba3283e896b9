"""compose.yaml must be a valid Compose Specification file that starts in the right order and
runs commands that exist (each is run with `--help`).

There is no Docker engine on CI machines, so we validate against the Compose Specification JSON
schema (vendored by check-jsonschema, kept current upstream) and check the wiring by reading.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


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


def test_plain_compose_up_starts_a_timed_simulated_engine(compose: dict) -> None:
    """`docker compose up` with no profile must serve: the simulated engine has no `profiles`
    key and is timed by the default profile of `autellix up`; the GPU engine is opt-in."""
    from autellix.local.engine_specs import DEFAULT_SIM_PROFILE, sim_profile_args
    from autellix.sim.profile import load_profile

    services = compose["services"]
    always = [n for n, svc in services.items() if n.startswith("engine") and "profiles" not in svc]
    assert always == ["engine-sim"]
    assert services["engine-vllm"]["profiles"] == ["gpu"]
    command = services["engine-sim"]["command"]
    timing = command[command.index("--token-latency") :]
    expected = sim_profile_args(load_profile(DEFAULT_SIM_PROFILE))
    assert [float(v) for v in timing[1::2]] == [float(v) for v in expected[1::2]]
    assert timing[::2] == expected[::2]
    header = (ROOT / "compose.yaml").read_text().split("\nname:")[0]
    assert "Compose v2" in header and "--profile gpu" in header and "SIMULATED" in header


def test_nats_config_enables_jetstream_tls_and_the_generated_users(compose: dict) -> None:
    """The config is checked by a real nats-server with generated secrets in
    tests/stack/test_deploy_secrets.py; here: it loads what compose mounts beside it."""
    conf = (ROOT / compose["configs"]["nats-conf"]["file"]).read_text()
    assert "jetstream" in conf and 'include "nats-auth.conf"' in conf
    mounted = {s["target"] for s in compose["services"]["nats"]["secrets"]}
    assert mounted == {"/etc/nats/nats-auth.conf", "/etc/nats/server-cert.pem",
                       "/etc/nats/server-key.pem"}  # fmt: skip
    assert 'cert_file: "/etc/nats/server-cert.pem"' in conf
    assert 'key_file: "/etc/nats/server-key.pem"' in conf


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
    assert "127.0.0.1:4318:4318" in compose["services"]["jaeger"]["ports"]


def test_an_unknown_flag_would_be_caught() -> None:
    """The check above can fail: a misspelt flag is an error even with --help."""
    argv = [sys.executable, "-m", "autellix.services.frontend", "--http-prot", "8000", "--help"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "http-prot" in proc.stderr


# --------------------------------------------------------------------------- monitoring


def test_prometheus_and_grafana_listen_on_this_host_only(compose: dict) -> None:
    """Neither has authentication worth exposing by default (Prometheus none at all)."""
    for name, port in (("prometheus", 9090), ("grafana", 3000)):
        assert compose["services"][name]["ports"] == [f"127.0.0.1:{port}:{port}"], name


def test_grafana_admin_password_comes_from_a_secret_without_default(compose: dict) -> None:
    grafana = compose["services"]["grafana"]
    env = grafana["environment"]
    assert "GF_SECURITY_ADMIN_PASSWORD" not in env  # no value in the file, default or not
    (secret,) = grafana["secrets"]
    assert env["GF_SECURITY_ADMIN_PASSWORD__FILE"] == f"/run/secrets/{secret}"
    assert compose["secrets"][secret] == {"environment": "GRAFANA_ADMIN_PASSWORD"}
    assert "GRAFANA_ADMIN_PASSWORD:-" not in (ROOT / "compose.yaml").read_text()
    # an empty secret would make Grafana fall back to admin/admin: the entrypoint refuses it
    script = grafana["entrypoint"][-1]
    assert f"test -s /run/secrets/{secret} ||" in script and "exit 1" in script
    assert script.rstrip().endswith("exec /run.sh")


def test_grafana_refuses_to_start_without_a_password(tmp_path: Path) -> None:
    """The entrypoint's check, run by a real shell: no password file or an empty one stops it
    before Grafana starts; a password lets it through to Grafana's own start script."""
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    shell, flag, script = compose["services"]["grafana"]["entrypoint"]
    secret = tmp_path / "grafana_admin_password"
    local = script.replace("/run/secrets/grafana_admin_password", str(secret))
    local = local.replace("exec /run.sh", "echo grafana-started")
    for content in (None, ""):
        if content is not None:
            secret.write_text(content)
        proc = subprocess.run([shell, flag, local], capture_output=True, text=True, timeout=10)
        assert proc.returncode == 1 and "set GRAFANA_ADMIN_PASSWORD" in proc.stderr
    secret.write_text("s3cret")
    proc = subprocess.run([shell, flag, local], capture_output=True, text=True, timeout=10)
    assert proc.returncode == 0 and proc.stdout.strip() == "grafana-started"


def test_prometheus_scrapes_every_service_on_its_exporter_port(compose: dict) -> None:
    prom = compose["services"]["prometheus"]
    (cfg,) = prom["configs"]
    conf = yaml.safe_load((ROOT / compose["configs"][cfg["source"]]["file"]).read_text())
    assert cfg["target"] in " ".join(prom["command"])
    exporter_port = int(
        compose["services"]["scheduler"]["environment"]["OTEL_EXPORTER_PROMETHEUS_PORT"]
    )
    scraped: set[str] = set()
    for job in conf["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            assert sd["port"] == exporter_port, job["job_name"]
            scraped |= set(sd["names"])
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                if host != "localhost":
                    assert int(port) == exporter_port, target
                    scraped.add(host)
    ours = {n for n, svc in compose["services"].items() if "build" in svc and n != "migrate"}
    assert ours == {"frontend", "scheduler", "engine-sim", "engine-vllm"}
    assert scraped == ours


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="no promtool (apt-get install prometheus)"
)
def test_promtool_accepts_the_prometheus_configuration(compose: dict) -> None:
    path = ROOT / compose["configs"]["prometheus-config"]["file"]
    proc = subprocess.run(
        ["promtool", "check", "config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout
