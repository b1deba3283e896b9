"""Per-stack NATS credentials: one user per role with random passwords, and the server config.

`autellix up` calls `generate` at every start (new passwords each time): it writes, mode 0600,
``<dir>/<role>.json`` (the user files of `autellix.runtime.nats_auth`) and ``<dir>/nats-auth.conf``
(an ``authorization { users [...] }`` block with each role's allow lists from
`autellix.runtime.nats_permissions.role_permissions`), which the embedded nats-server loads with
``-c``. Flags given to nats-server override the config file, so ports and JetStream stay as the
command line says.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path

from autellix.local.stack_file import write_private
from autellix.runtime.nats_auth import NatsUser
from autellix.runtime.nats_permissions import Permissions, Role, inbox_prefix, role_permissions
from autellix.wire.subjects import Subjects

__all__ = ["StackCredentials", "generate", "server_config"]

CONFIG_FILE = "nats-auth.conf"


@dataclass(frozen=True)
class StackCredentials:
    """Where one stack's credentials are: a user file per role and the server config."""

    user_files: dict[Role, Path]
    server_config: Path


def _quote(text: str) -> str:
    return json.dumps(text)  # nats-server's config accepts JSON strings


def server_config(users: list[tuple[NatsUser, Permissions]]) -> str:
    """The ``authorization`` block for `users` (nats-server's config format)."""
    lines = ["authorization {", "  users = ["]
    for user, perms in users:
        pub = ", ".join(_quote(s) for s in perms.publish)
        sub = ", ".join(_quote(s) for s in perms.subscribe)
        lines += [
            "    {",
            f"      user: {_quote(user.user)}",
            f"      password: {_quote(user.password)}",
            "      permissions: {",
            f"        publish: {{ allow: [{pub}] }}",
            f"        subscribe: {{ allow: [{sub}] }}",
            "      }",
            "    }",
        ]
    lines += ["  ]", "}", ""]
    return "\n".join(lines)


def generate(directory: Path, subjects: Subjects) -> StackCredentials:
    """Fresh random credentials for every role of `subjects`' namespace, written to `directory`."""
    users: list[tuple[NatsUser, Permissions]] = []
    files: dict[Role, Path] = {}
    for role in Role:
        name = f"autellix-{role.value}"
        user = NatsUser(
            user=name, password=secrets.token_urlsafe(24), inbox_prefix=inbox_prefix(name)
        )
        users.append((user, role_permissions(subjects, role, name)))
        path = directory.absolute() / f"{role.value}.json"
        write_private(path, json.dumps(user.to_json(), indent=2) + "\n")
        files[role] = path
    config = directory.absolute() / CONFIG_FILE
    write_private(config, server_config(users))
    return StackCredentials(user_files=files, server_config=config)
