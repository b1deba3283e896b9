"""`autellix secrets generate` makes secrets a real nats-server runs with, as compose runs it.

The server loads compose's own ``deploy/nats/nats.conf`` (paths moved from /etc/nats to a temp
dir, ports chosen by the server) with the generated users, permissions and TLS certificate beside
it. A client connects over TLS trusting the generated CA with the generated client user, and is
confined to its role (it cannot read ``_INBOX.>``); without the CA the handshake fails, and the
Autellix client says so at once; without a user the server refuses. The files themselves are
private, distinct per role and not overwritten by a second run.
"""

from __future__ import annotations

import json
import re
import ssl
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from asyncpg.connect_utils import _read_password_from_pgpass  # type: ignore[attr-defined]

from autellix.client import Client, NatsConnectError
from autellix.local import deploy_secrets
from autellix.local.embedded import EmbeddedNats
from autellix.runtime import api_keys
from autellix.runtime.nats_auth import (
    ENV_NATS_CA_FILE,
    ENV_NATS_USER_FILE,
    connect_options,
    read_user_file,
)
from autellix.runtime.nats_permissions import Role
from autellix.transport import bus
from autellix.wire.subjects import Subjects
from tests.stack.test_nats_auth import Violations

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "autellix"  # compose's AUTELLIX_NAMESPACE: the permissions name its subjects
SERVER_FILES = ("nats-auth.conf", "server-cert.pem", "server-key.pem")  # compose.yaml mounts


@pytest.fixture(scope="module")
def secrets_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("deploy") / "secrets"
    deploy_secrets.generate(out, namespace=NAMESPACE)
    return out


@pytest.fixture(scope="module")
def server(secrets_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    """compose's nats service: its nats.conf and, beside it, the files its secrets mount."""
    etc = tmp_path_factory.mktemp("etc-nats")
    conf = (ROOT / "deploy" / "nats" / "nats.conf").read_text().replace("/etc/nats/", f"{etc}/")
    # EmbeddedNats' -p, -m and -sd choose the ports and the store (-sd may not repeat store_dir)
    (etc / "nats.conf").write_text(re.sub(r"\n\s*store_dir:[^\n]*", "", conf))
    for name in SERVER_FILES:
        (etc / name).write_text((secrets_dir / name).read_text())
    nats_server = EmbeddedNats(extra_args=("-c", str(etc / "nats.conf"), "-m", "-1"))
    nats_server.start()
    assert nats_server.server_info.get("tls_required") is True
    try:
        yield nats_server
    finally:
        nats_server.stop()


def _tls_url(server: EmbeddedNats) -> str:
    return f"tls://127.0.0.1:{server.port}"


def _env(secrets_dir: Path, role: Role | None, ca: bool = True) -> dict[str, str]:
    env = {ENV_NATS_USER_FILE: str(secrets_dir / f"{role.value}.json")} if role else {}
    if ca:
        env[ENV_NATS_CA_FILE] = str(secrets_dir / "ca.pem")
    return env


async def _connect(server: EmbeddedNats, env: dict[str, str], **kw: Any) -> Any:
    return await nats.connect(
        _tls_url(server), max_reconnect_attempts=0, allow_reconnect=False, connect_timeout=5,
        **connect_options(env=env), **kw,
    )  # fmt: skip


# --------------------------------------------------------------------------- the files


def test_every_file_is_private_and_each_role_has_its_own_user(secrets_dir: Path) -> None:
    assert stat.S_IMODE(secrets_dir.stat().st_mode) == 0o700
    names = sorted(p.name for p in secrets_dir.iterdir())
    assert names == sorted(deploy_secrets.file_names())
    for path in secrets_dir.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    users = {role: read_user_file(secrets_dir / f"{role.value}.json") for role in Role}
    assert len({u.user for u in users.values()}) == len(Role)
    assert len({u.password for u in users.values()}) == len(Role)
    conf = (secrets_dir / "nats-auth.conf").read_text()
    for user in users.values():
        assert json.dumps(user.user) in conf and json.dumps(user.password) in conf
    assert list(api_keys.read(secrets_dir / "api-keys.txt").values()) == ["default"]


def test_the_pgpass_file_gives_compose_services_the_postgres_password(secrets_dir: Path) -> None:
    """asyncpg (the services' driver) finds the password for compose's Postgres URL
    (postgresql://autellix@postgres:5432/autellix) in the pgpass file."""
    password = (secrets_dir / "postgres-password").read_text()
    assert len(password) >= 32
    found = _read_password_from_pgpass(
        passfile=secrets_dir / "pgpass", hosts=["postgres"], ports=[5432],
        database="autellix", user="autellix",
    )  # fmt: skip
    assert found == password


def test_a_second_run_refuses_to_overwrite_unless_forced(tmp_path: Path) -> None:
    out = tmp_path / "s"
    deploy_secrets.generate(out)
    before = (out / "frontend.json").read_text()
    with pytest.raises(deploy_secrets.SecretsExistError, match="--force"):
        deploy_secrets.generate(out)
    assert (out / "frontend.json").read_text() == before
    deploy_secrets.generate(out, force=True)
    assert (out / "frontend.json").read_text() != before
    with pytest.raises(ValueError, match="not a host name"):
        deploy_secrets.generate(tmp_path / "bad", hosts=("a b",))
    assert not (tmp_path / "bad").exists()  # refused before writing anything


# --------------------------------------------------------------------------- the server


@pytest.mark.timeout(60)
async def test_a_client_connects_over_tls_and_stays_in_its_role(
    server: EmbeddedNats, secrets_dir: Path
) -> None:
    errors = Violations()
    nc = await _connect(server, _env(secrets_dir, Role.client), error_cb=errors.on_error)
    try:
        assert nc.is_connected and nc.connected_url.scheme == "tls"
        seen: list[str] = []

        async def record(msg: Any) -> None:
            seen.append(msg.subject)

        for subject in ("_INBOX.>", f"{NAMESPACE}.>"):
            await nc.subscribe(subject, cb=record)
            await errors.wait_for("subscription", subject)
        await nc.publish(Subjects(NAMESPACE).dispatch("e-0", 0), b"{}")  # a forged Dispatch
        await errors.wait_for("publish", Subjects(NAMESPACE).dispatch("e-0", 0))
        # what the client role may do: request the frontend, hear on its own inbox
        inbox = nc.new_inbox()
        await nc.subscribe(f"{inbox}.>", cb=record)
        await nc.publish(Subjects(NAMESPACE).submit, b"{}", reply=f"{inbox}.1")
        await nc.flush()
        assert not [e for e in errors.errors if "_inbox.autellix-client" in e.lower()]
        assert not [e for e in errors.errors if ".call.submit" in e.lower()]
    finally:
        await nc.close()


@pytest.mark.timeout(60)
async def test_without_the_ca_the_handshake_fails(server: EmbeddedNats, secrets_dir: Path) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):  # the system's CAs do not know it
        await _connect(server, _env(secrets_dir, Role.client, ca=False))
    # a CA that did not sign the server's certificate is no better
    other = deploy_secrets.generate(secrets_dir.parent / "other").directory
    with pytest.raises(ssl.SSLCertVerificationError):
        await _connect(
            server, {**_env(secrets_dir, Role.client), ENV_NATS_CA_FILE: str(other / "ca.pem")}
        )


@pytest.mark.timeout(60)
async def test_the_autellix_client_reports_an_untrusted_server_at_once(
    server: EmbeddedNats, secrets_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SDK retries a server that is down, but a certificate it does not trust will not get
    better: `NatsConnectError` names the CA setting within seconds; with the CA it connects."""
    user_file = str(secrets_dir / "client.json")
    monkeypatch.delenv(ENV_NATS_CA_FILE, raising=False)
    started = time.monotonic()
    with pytest.raises(NatsConnectError, match=ENV_NATS_CA_FILE):
        async with Client(_tls_url(server), namespace=NAMESPACE, user_file=user_file):
            pass
    assert time.monotonic() - started < 10
    monkeypatch.setenv(ENV_NATS_CA_FILE, str(secrets_dir / "ca.pem"))
    async with Client(_tls_url(server), namespace=NAMESPACE, user_file=user_file) as client:
        assert client is not None


@pytest.mark.timeout(60)
async def test_no_user_no_connection(server: EmbeddedNats, secrets_dir: Path) -> None:
    with pytest.raises(Exception, match=r"(?i)authorization"):
        await _connect(server, _env(secrets_dir, None))


@pytest.mark.timeout(60)
async def test_a_service_connects_with_its_role_from_the_environment(
    server: EmbeddedNats, secrets_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What compose sets for a scheduler (AUTELLIX_NATS_USER_FILE, AUTELLIX_NATS_CA_FILE and a
    tls:// URL) is all `bus.connect` needs; without the CA it fails fast, like the client."""
    monkeypatch.setenv(ENV_NATS_USER_FILE, str(secrets_dir / "scheduler.json"))
    monkeypatch.setenv(ENV_NATS_CA_FILE, str(secrets_dir / "ca.pem"))
    nc = await bus.connect(_tls_url(server), "test-scheduler")
    try:
        assert nc.is_connected and nc.connected_url.scheme == "tls"
    finally:
        await nc.close()
    monkeypatch.delenv(ENV_NATS_CA_FILE)
    started = time.monotonic()
    with pytest.raises(NatsConnectError, match=ENV_NATS_CA_FILE):
        await bus.connect(_tls_url(server), "test-scheduler")
    assert time.monotonic() - started < 10
