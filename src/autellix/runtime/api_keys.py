"""HTTP API keys: the key file (``--api-key-file``), each key mapped to a tenant.

Format: one key per line, ``<key> <tenant>``; blank lines and lines starting with ``#`` are
ignored. Keys are 16-256 printable ASCII characters without spaces, not starting with ``#``;
tenants are 1-64 characters from ``A-Z a-z 0-9 _ . -``. A key given twice, or a malformed
line, makes the whole file unusable (a ValueError naming the line): a frontend must not start
serving with half of its keys.
`autellix up` writes one key for the tenant ``default`` (``generate``), mode 0600.
"""

from __future__ import annotations

import hmac
import re
import secrets
from pathlib import Path

__all__ = ["DEFAULT_TENANT", "generate", "parse", "read", "tenant_of"]

DEFAULT_TENANT = "default"
_KEY_RE = re.compile(r"^[\x21-\x22\x24-\x7e][\x21-\x7e]{15,255}$")  # not '#': a comment
_TENANT_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def parse(text: str) -> dict[str, str]:
    """key -> tenant of a key file's text."""
    keys: dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or not _KEY_RE.match(parts[0]) or not _TENANT_RE.match(parts[1]):
            raise ValueError(f"line {n}: expected '<key> <tenant>' (key 16-256 characters)")
        if parts[0] in keys:
            raise ValueError(f"line {n}: the same key is given twice")
        keys[parts[0]] = parts[1]
    if not keys:
        raise ValueError("no keys in the key file")
    return keys


def read(path: str | Path) -> dict[str, str]:
    """`parse` of the file at `path`; errors name the file."""
    try:
        return parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"unusable API key file {path}: {exc}") from None


def tenant_of(authorization: str | None, keys: dict[str, str]) -> str | None:
    """The tenant of an ``Authorization: Bearer <key>`` header value, or None. Compared in
    constant time, so response timing does not reveal how much of a key was right."""
    if not authorization:
        return None
    scheme, _, key = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return None
    given = key.strip().encode()
    found = None
    for known, tenant in keys.items():
        if hmac.compare_digest(known.encode(), given):
            found = tenant
    return found


def generate(path: Path, tenant: str = DEFAULT_TENANT) -> str:
    """Write a key file with one new key for `tenant` (mode 0600); returns the key."""
    from autellix.local.stack_file import write_private

    key = "ax-" + secrets.token_urlsafe(32)
    write_private(path, f"# autellix API keys: <key> <tenant>\n{key} {tenant}\n")
    return key
