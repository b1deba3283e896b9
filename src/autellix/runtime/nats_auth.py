"""NATS user credentials of one connection: the *user file* named by ``AUTELLIX_NATS_USER_FILE``.

One mechanism for every party: a JSON file ``{"user": ..., "password": ..., "inbox_prefix": ...}``
(mode 0600; `autellix up` writes one per role, `autellix.local.nats_credentials`). Services read
it from the environment variable, the Python client from the variable or from the running stack's
``stack.json`` (``credentials.nats_user_file``). A file keeps the password out of process
listings and environment dumps; the inbox prefix travels with it because nats-server only lets a
user subscribe under its own prefix (`autellix.runtime.nats_permissions`).

TLS: a server with a certificate from a private CA (what `autellix secrets generate` makes for
compose and Kubernetes) is trusted through ``AUTELLIX_NATS_CA_FILE``, the CA's PEM file; without
it nats-py checks the server against the system's CAs, and a ``tls://`` URL to a private-CA
server fails the handshake.
"""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autellix.runtime.nats_permissions import inbox_prefix, validate_user

__all__ = [
    "ENV_NATS_CA_FILE",
    "ENV_NATS_USER_FILE",
    "NatsUser",
    "connect_options",
    "read_user_file",
    "tls_context",
]

ENV_NATS_USER_FILE = "AUTELLIX_NATS_USER_FILE"
ENV_NATS_CA_FILE = "AUTELLIX_NATS_CA_FILE"


@dataclass(frozen=True)
class NatsUser:
    """One NATS user's login and the inbox prefix its permissions allow."""

    user: str
    password: str
    inbox_prefix: str

    def to_json(self) -> dict[str, str]:
        return {"user": self.user, "password": self.password, "inbox_prefix": self.inbox_prefix}

    def connect_options(self) -> dict[str, Any]:
        """Keyword arguments for ``nats.connect``."""
        return {"user": self.user, "password": self.password, "inbox_prefix": self.inbox_prefix}


def read_user_file(path: str | Path) -> NatsUser:
    """The user in `path`; a missing or malformed file is a ValueError naming the file (a
    service must not start half-configured and then fail every request as unauthorized)."""
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
        user = validate_user(str(obj["user"]))
        password = obj["password"]
        if not isinstance(password, str) or not password:
            raise ValueError("empty password")
        prefix = str(obj.get("inbox_prefix") or inbox_prefix(user))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"unusable NATS user file {path}: {exc!r}") from None
    return NatsUser(user=user, password=password, inbox_prefix=prefix)


def tls_context(ca_file: str | Path) -> ssl.SSLContext:
    """A client TLS context trusting only the CA in `ca_file` (host names still checked); a
    missing or malformed file is a ValueError naming it."""
    try:
        return ssl.create_default_context(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"unusable NATS CA file {ca_file}: {exc!r}") from None


def connect_options(
    env: Mapping[str, str] | None = None, user_file: str | Path | None = None
) -> dict[str, Any]:
    """``nats.connect`` keyword arguments for `user_file`, else ``$AUTELLIX_NATS_USER_FILE``,
    and the ``tls`` context of ``$AUTELLIX_NATS_CA_FILE``; empty where none is set (a server
    without authentication or with a publicly trusted certificate)."""
    environ = env if env is not None else os.environ
    path = user_file or environ.get(ENV_NATS_USER_FILE)
    options = read_user_file(path).connect_options() if path else {}
    ca_file = environ.get(ENV_NATS_CA_FILE)
    if ca_file:
        options["tls"] = tls_context(ca_file)
    return options
