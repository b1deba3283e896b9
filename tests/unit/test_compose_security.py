"""compose.yaml is secure by default: nothing works unchanged without generated secrets.

Read from the file (there is no Docker engine on CI machines) and from a real run of
`autellix secrets generate`: only the HTTP API is published beyond this host, no password has a
default, each service receives only its own role's NATS user, and compose's variable
interpolation (implemented below as the Compose Specification defines it) refuses to resolve the
file without the generated ``compose.env``, while with it every secret file it names exists.
tests/stack/test_deploy_secrets.py starts a real nats-server with the generated material.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]

#: which NATS user (compose secret) each service that talks to NATS must get, and only it
ROLE_SECRET = {
    "frontend": "nats-frontend",
    "scheduler": "nats-scheduler",
    "engine-sim": "nats-engine",
    "engine-vllm": "nats-engine",
}
NATS_USERS = {"nats-client", *ROLE_SECRET.values()}
SERVER_SECRETS = {"nats-server-auth", "nats-server-cert", "nats-server-key"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


# --------------------------------------------------------------------------- interpolation

_VAR = re.compile(r"\$(?:\$|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|([A-Za-z_]\w*))")


class MissingVariable(ValueError):
    """A required variable (``${VAR:?message}``) is unset or empty."""


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """`value` with compose's ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``,
    ``${VAR:?message}``, ``${VAR?message}`` and ``$$`` resolved against `env`, recursively."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        op, arg = m.group(2), m.group(3) or ""
        unset = name not in env
        empty = unset or env[name] == ""
        if op in (":?", "?") and (empty if op == ":?" else unset):
            raise MissingVariable(f"required variable {name} is missing a value: {arg}")
        if op in (":-", "-") and (empty if op == ":-" else unset):
            return arg
        return env.get(name, "")

    return _VAR.sub(one, value)


def test_the_interpolation_follows_the_specification() -> None:
    env = {"SET": "v", "EMPTY": ""}
    assert interpolate("${SET:-d} ${EMPTY:-d} ${EMPTY-d} ${UNSET-d} $$SET $SET", env) == (
        "v d  d $SET v"
    )
    assert interpolate("${EMPTY?m}", env) == ""
    for required in ("${EMPTY:?m}", "${UNSET:?m}", "${UNSET?m}"):
        with pytest.raises(MissingVariable, match="m"):
            interpolate(required, env)


# --------------------------------------------------------------------------- ports


def _published(port: Any) -> tuple[str, str]:
    """(host IP, host port) of one `ports` entry: short syntax `[ip:]host:container[/proto]`
    or long syntax; an entry without a host port publishes a random one on all interfaces."""
    if isinstance(port, dict):
        return port.get("host_ip", "0.0.0.0"), str(port.get("published", ""))
    parts = str(port).split("/")[0].rsplit(":", 2)
    if len(parts) == 3:
        return parts[0].strip("[]"), parts[1]
    if len(parts) == 2:
        return "0.0.0.0", parts[0]
    return "0.0.0.0", ""


def test_only_the_http_api_is_published_beyond_this_host(compose: dict[str, Any]) -> None:
    everywhere = [
        (name, port)
        for name, svc in compose["services"].items()
        for port in svc.get("ports", [])
        if _published(port)[0] not in ("127.0.0.1", "::1")
    ]
    assert everywhere == [("frontend", "8000:8000")]
    for name, svc in compose["services"].items():
        assert "network_mode" not in svc, name  # host networking would publish every port
        assert "expose" not in svc or name == "frontend", name


def test_the_port_parser_reads_every_syntax() -> None:
    assert _published("127.0.0.1:9090:9090") == ("127.0.0.1", "9090")
    assert _published("8000:8000/tcp") == ("0.0.0.0", "8000")
    assert _published("4222") == ("0.0.0.0", "")
    assert _published({"target": 1, "published": 2, "host_ip": "127.0.0.1"}) == ("127.0.0.1", "2")


# --------------------------------------------------------------------------- passwords


def test_no_password_has_a_default(compose: dict[str, Any]) -> None:
    text = (ROOT / "compose.yaml").read_text()
    assert "change-me" not in text
    sensitive = re.compile(r"PASSWORD|SECRET|TOKEN|KEY|_USER$|UID|GID")
    for name, op, arg in re.findall(r"\$\{(\w+)(?:(:?[-?+])([^}]*))?\}", text):
        if sensitive.search(name):
            # HF_TOKEN may be empty: no token means public models only, it logs in nowhere
            assert op in (":?", "?") or (name == "HF_TOKEN" and arg == ""), f"${{{name}{op}}}"
    for name, svc in compose["services"].items():
        for var, value in (svc.get("environment") or {}).items():
            assert not (re.search(r"PASSWORD$", var) and value), f"{name}: {var} has a value"
            if isinstance(value, str) and "://" in value:  # no password in a URL
                userinfo, at, _ = value.split("://", 1)[1].split("/")[0].rpartition("@")
                assert not at or ":" not in userinfo, f"{name}: {var}"


def test_compose_does_not_resolve_without_the_generated_secrets(compose: dict[str, Any]) -> None:
    with pytest.raises(MissingVariable, match="autellix secrets generate"):
        interpolate(compose, {})
    for name, secret in compose["secrets"].items():
        if "file" in secret:  # every file secret needs the directory, none has a fallback
            assert secret["file"].startswith("${AUTELLIX_SECRETS:?"), name


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("secrets") / "deploy-secrets"
    proc = subprocess.run(
        [sys.executable, "-m", "autellix.cli", "secrets", "generate", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return out


def _env_file(path: Path) -> dict[str, str]:
    """A compose env file of the simple form `generate` writes: KEY=value or KEY='value'."""
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = value[1:-1] if value[:1] == "'" == value[-1:] else value
    return env


def test_with_the_generated_env_file_every_secret_exists(
    compose: dict[str, Any], generated: Path
) -> None:
    env = _env_file(generated / "compose.env")
    resolved = interpolate(compose, env)
    for name, secret in resolved["secrets"].items():
        if "file" in secret:
            assert Path(secret["file"]).is_file(), f"{name}: {secret['file']}"
        else:
            assert env[secret["environment"]], name  # Grafana's password, generated too
    user = resolved["x-app"]["user"]
    assert user == f"{env['AUTELLIX_UID']}:{env['AUTELLIX_GID']}"
    owner = (generated / "frontend.json").stat()
    assert user == f"{owner.st_uid}:{owner.st_gid}"  # the containers can read the 0600 files


# --------------------------------------------------------------------------- secrets per service


def _secrets_of(svc: dict[str, Any]) -> dict[str, str]:
    """source -> target path of a service's secrets (short syntax: /run/secrets/<source>)."""
    out: dict[str, str] = {}
    for s in svc.get("secrets", []):
        source, target = (
            (s, s) if isinstance(s, str) else (s["source"], s.get("target", s["source"]))
        )
        out[source] = target if target.startswith("/") else f"/run/secrets/{target}"
    return out


def test_each_service_gets_only_its_own_role(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, svc in services.items():
        got = _secrets_of(svc)
        users = NATS_USERS & set(got)
        if name in ROLE_SECRET:
            assert users == {ROLE_SECRET[name]}, name
            env = svc["environment"]
            assert got[ROLE_SECRET[name]] == env["AUTELLIX_NATS_USER_FILE"], name
            assert got["nats-ca"] == env["AUTELLIX_NATS_CA_FILE"], name
            assert got["pgpass"] == env["PGPASSFILE"], name
            assert env["AUTELLIX_NATS_URL"].startswith("tls://"), name
        else:
            assert not users, f"{name} gets a NATS user: {users}"
        assert bool(SERVER_SECRETS & set(got)) == (name == "nats"), name
        assert ("api-keys" in got) == (name == "frontend"), name
        assert ("postgres-password" in got) == (name == "postgres"), name
    assert (
        services["migrate"]["environment"]["PGPASSFILE"]
        in _secrets_of(services["migrate"]).values()
    )
    pg = services["postgres"]
    assert pg["environment"]["POSTGRES_PASSWORD_FILE"] == _secrets_of(pg)["postgres-password"]
    assert "POSTGRES_PASSWORD" not in pg["environment"]


def test_the_frontend_requires_api_keys(compose: dict[str, Any]) -> None:
    fe = compose["services"]["frontend"]
    cmd = fe["command"]
    assert cmd[cmd.index("--api-key-file") + 1] == _secrets_of(fe)["api-keys"]


def test_a_second_generate_is_refused_with_a_clear_error(generated: Path) -> None:
    before = (generated / "frontend.json").read_text()
    proc = subprocess.run(
        [sys.executable, "-m", "autellix.cli", "secrets", "generate", "--out", str(generated)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "--force" in proc.stderr and "Traceback" not in proc.stderr
    assert (generated / "frontend.json").read_text() == before
