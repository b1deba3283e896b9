"""Every secret a compose or Kubernetes deployment needs, generated into one directory.

`autellix secrets generate --out DIR` calls `generate`. The NATS users and the HTTP API key come
from the same code `autellix up` uses for its embedded stack (`autellix.local.nats_credentials`,
`autellix.runtime.api_keys`), so a deployment gets the same per-role permissions; what it adds
is what a stack spread over containers needs and `autellix up` does not: TLS for NATS
(`autellix.local.tls_certs`), the Postgres password, and the wiring files for compose
(``compose.env``) and Kubernetes (``kustomization.yaml``, a secretGenerator over these files).

Every file is written mode 0600 (the directory 0700 when created here). Existing files are not
replaced unless ``force``: a second run would otherwise lock every running service out.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from autellix.local import nats_credentials
from autellix.local.nats_credentials import CONFIG_FILE
from autellix.local.stack_file import write_private
from autellix.local.tls_certs import DEFAULT_HOSTS, make_server_tls
from autellix.runtime import api_keys
from autellix.runtime.nats_permissions import Role
from autellix.wire.subjects import Subjects

__all__ = [
    "CA_FILE",
    "COMPOSE_ENV",
    "KUSTOMIZATION",
    "SecretsExistError",
    "file_names",
    "generate",
    "k8s_secret_name",
]

API_KEY_FILE = "api-keys.txt"
CA_FILE = "ca.pem"
SERVER_CERT = "server-cert.pem"
SERVER_KEY = "server-key.pem"
POSTGRES_PASSWORD = "postgres-password"
PGPASS = "pgpass"
COMPOSE_ENV = "compose.env"
KUSTOMIZATION = "kustomization.yaml"
#: the Postgres role and database of compose.yaml
PG_USER = "autellix"


class SecretsExistError(FileExistsError):
    """The directory already holds generated secrets (pass force to replace them)."""


@dataclass(frozen=True)
class DeploySecrets:
    """What `generate` wrote: the directory and each file in it."""

    directory: Path
    files: list[Path]


def file_names() -> list[str]:
    """Every file `generate` writes, by name."""
    return [
        *(f"{role.value}.json" for role in Role),
        CONFIG_FILE,
        API_KEY_FILE,
        CA_FILE,
        SERVER_CERT,
        SERVER_KEY,
        POSTGRES_PASSWORD,
        PGPASS,
        COMPOSE_ENV,
        KUSTOMIZATION,
    ]


def k8s_secret_name(role: Role) -> str:
    """The Kubernetes Secret holding `role`'s NATS user file (``user.json``) and ``ca.pem``."""
    return f"autellix-nats-{role.value}"


def _kustomization() -> str:
    """A kustomize secretGenerator over the generated files: `kubectl apply -k DIR` creates
    one Secret per role (so each workload mounts only its own), the servers' Secret and the
    HTTP API keys. No hash suffix: deploy/k8s refers to the Secrets by these fixed names."""
    lines = [
        "# Kubernetes Secrets from the files beside this one: kubectl apply -k <this directory>",
        "apiVersion: kustomize.config.k8s.io/v1beta1",
        "kind: Kustomization",
        "generatorOptions:",
        "  disableNameSuffixHash: true",
        "secretGenerator:",
        "  - name: autellix-nats-server",
        f"    files: [{CONFIG_FILE}, {SERVER_CERT}, {SERVER_KEY}]",
    ]
    for role in Role:
        lines += [
            f"  - name: {k8s_secret_name(role)}",
            f"    files: [user.json={role.value}.json, {CA_FILE}]",
        ]
    lines += ["  - name: autellix-api-keys", f"    files: [{API_KEY_FILE}]", ""]
    return "\n".join(lines)


def _compose_env(directory: Path, grafana_password: str) -> str:
    """``docker compose --env-file`` input: where the secrets are, who may read them (the app
    containers run as the generating user, the owner of these 0600 files) and Grafana's admin
    password (compose passes it as an environment-sourced secret)."""
    if "'" in str(directory) or "\n" in str(directory):
        raise ValueError(f"the secrets directory's path cannot go into {COMPOSE_ENV}: {directory}")
    return (
        "# docker compose --env-file <this file> up  (written by autellix secrets generate)\n"
        f"AUTELLIX_SECRETS='{directory}'\n"
        f"AUTELLIX_UID={os.getuid()}\n"
        f"AUTELLIX_GID={os.getgid()}\n"
        f"GRAFANA_ADMIN_PASSWORD={grafana_password}\n"
    )


def generate(
    directory: Path,
    *,
    namespace: str = "autellix",
    hosts: tuple[str, ...] | list[str] = DEFAULT_HOSTS,
    force: bool = False,
) -> DeploySecrets:
    """Write fresh secrets for a deployment using `namespace` to `directory`; the NATS server
    certificate is valid for `hosts`. Raises `SecretsExistError` where any file is there
    already and not `force`, ValueError for a bad host or namespace (before writing anything)."""
    directory = directory.absolute()
    subjects = Subjects(namespace)
    existing = [n for n in file_names() if (directory / n).exists()]
    if existing and not force:
        raise SecretsExistError(
            f"{directory} already holds secrets ({', '.join(existing)}); "
            "pass --force to replace them (every service then needs the new ones)"
        )
    # everything that can fail on bad input, before any file is written
    tls = make_server_tls(tuple(hosts))
    compose_env = _compose_env(directory, secrets.token_urlsafe(18))
    if not directory.exists():
        directory.mkdir(mode=0o700, parents=True)
    nats_credentials.generate(directory, subjects)
    api_keys.generate(directory / API_KEY_FILE)
    write_private(directory / CA_FILE, tls.ca_cert)
    write_private(directory / SERVER_CERT, tls.server_cert)
    write_private(directory / SERVER_KEY, tls.server_key)
    pg_password = secrets.token_hex(24)  # no ':' or '\\': safe in pgpass and URLs alike
    write_private(directory / POSTGRES_PASSWORD, pg_password)
    write_private(directory / PGPASS, f"*:*:*:{PG_USER}:{pg_password}\n")
    write_private(directory / COMPOSE_ENV, compose_env)
    write_private(directory / KUSTOMIZATION, _kustomization())
    return DeploySecrets(directory=directory, files=[directory / n for n in file_names()])
