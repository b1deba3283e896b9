"""Connection settings shared by the CLI and the services, and Postgres URL conversions.

One rule everywhere: an explicit value (a CLI flag) wins, then the environment variable, then the
default. ``None`` for a URL means "nobody configured one", which `autellix up` / `demo` read as
"start the embedded server" (see ``autellix.local.embedded``); services require both URLs.

NATS URLs may name several servers of one cluster, comma-separated
(``nats://a:4222,nats://b:4222``): every connection gets the whole list (``nats_servers``), so a
client or service reconnects to whichever server survives. ``AUTELLIX_JS_REPLICAS`` is the replica
count of the JetStream streams the services create (``js_replicas``; 3 on a three-server cluster).

The environment variables are also how `autellix up` hands the settings to the service processes
it starts (``Settings.to_env``), so a service never needs flags to find NATS and Postgres.

Postgres URLs: users and tools write ``postgresql://``, ``postgres://`` or a driver-qualified form;
asyncpg wants ``postgresql://`` and SQLAlchemy wants ``postgresql+asyncpg://``. The embedded
Postgres (pgserver) listens on a Unix socket only, written ``postgresql://user@/db?host=/dir``;
both asyncpg and SQLAlchemy's asyncpg dialect accept that form, and ``postgresql://user@%2Fdir/db``
(libpq's percent-encoded form) is rewritten into it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

__all__ = [
    "DEFAULT_NAMESPACE",
    "ENV_DATABASE_URL",
    "ENV_DATA_DIR",
    "ENV_JS_REPLICAS",
    "ENV_NAMESPACE",
    "ENV_NATS_URL",
    "Settings",
    "asyncpg_dsn",
    "checked_env_float",
    "database_name",
    "default_data_dir",
    "env_float",
    "js_replicas",
    "nats_servers",
    "parse_js_replicas",
    "redact_url",
    "resolve",
    "sqlalchemy_url",
    "validate_namespace",
    "with_database",
]

ENV_NATS_URL = "AUTELLIX_NATS_URL"
ENV_DATABASE_URL = "AUTELLIX_DATABASE_URL"
ENV_NAMESPACE = "AUTELLIX_NAMESPACE"
ENV_DATA_DIR = "AUTELLIX_DATA_DIR"
ENV_JS_REPLICAS = "AUTELLIX_JS_REPLICAS"
#: JetStream's limit on a stream's replicas
MAX_JS_REPLICAS = 5
DEFAULT_NAMESPACE = "autellix"

# The namespace prefixes NATS subjects (a token: no '.', '*', '>' or spaces) and JetStream stream
# and KV bucket names (which also forbid '.'), so it is limited to what both accept.
_NAMESPACE_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_PG_SCHEMES = ("postgresql", "postgres")


def env_float(
    name: str,
    default: float,
    log: Any = None,
    *,
    positive: bool = False,
    env: Mapping[str, str] | None = None,
) -> float:
    """A number of seconds (or any float) from environment variable `name`; unset or empty:
    `default`. A value that is not a number (or not > 0 with `positive`) is logged on `log` and
    the default used: a typo in a tuning setting must not stop a service at start."""
    raw = (env if env is not None else os.environ).get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        if log is not None:
            log.warning(f"{name} is not a number; using the default", value=raw, default=default)
        return default
    if positive and not value > 0:
        if log is not None:
            log.warning(f"{name} must be > 0; using the default", value=raw, default=default)
        return default
    return value


def checked_env_float(
    name: str,
    default: float,
    *,
    minimum: float,
    maximum: float | None = None,
    env: Mapping[str, str] | None = None,
) -> float:
    """Like `env_float`, but a value that does not parse or lies outside [minimum, maximum] is a
    start-up error (ValueError) naming the variable: for settings whose silent default would
    hide a mistake (how long a login lasts, how much the dashboard keeps)."""
    raw = (env if env is not None else os.environ).get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None
    if maximum is not None and not minimum <= value <= maximum:
        raise ValueError(f"{name}={raw!r} is not between {minimum:.15g} and {maximum:.15g}")
    if value < minimum:
        raise ValueError(f"{name}={raw!r} is below {minimum:g}")
    return value


def nats_servers(url: str) -> list[str]:
    """The server URLs of a comma-separated NATS URL list, in order, without blanks."""
    servers = [u.strip() for u in url.split(",") if u.strip()]
    if not servers:
        raise ValueError(f"no NATS server in {url!r}")
    return servers


def parse_js_replicas(raw: str | int | None) -> int | None:
    """A JetStream replica count (1-5), or None for "not configured"."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{ENV_JS_REPLICAS} must be a whole number, got {raw!r}") from None
    if not 1 <= value <= MAX_JS_REPLICAS:
        raise ValueError(f"{ENV_JS_REPLICAS} must be 1-{MAX_JS_REPLICAS}, got {value}")
    return value


def js_replicas(env: Mapping[str, str] | None = None) -> int | None:
    """``AUTELLIX_JS_REPLICAS``, or None where it is unset: then a stream is created with one
    replica and an existing stream keeps the count it has (an operator's ``nats stream edit
    --replicas 3`` survives service restarts). A bad value is an error: guessing a replica
    count would silently change how many server failures the streams survive."""
    return parse_js_replicas((env if env is not None else os.environ).get(ENV_JS_REPLICAS))


def validate_namespace(namespace: str) -> str:
    """Return ``namespace`` if it is usable as a subject token and stream-name prefix."""
    if not _NAMESPACE_RE.match(namespace):
        raise ValueError(
            f"invalid namespace {namespace!r}: use 1-64 characters from A-Z a-z 0-9 _ -"
        )
    return namespace


def default_data_dir() -> Path:
    """Where embedded servers keep state: $AUTELLIX_DATA_DIR or the platform's user data dir."""
    env = os.environ.get(ENV_DATA_DIR)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("autellix", appauthor=False))


@dataclass(frozen=True)
class Settings:
    """Resolved connection settings. A ``None`` URL means: use the embedded server."""

    nats_url: str | None
    database_url: str | None
    namespace: str = DEFAULT_NAMESPACE
    #: JetStream stream replicas (``AUTELLIX_JS_REPLICAS``); None: see ``js_replicas``
    js_replicas: int | None = None

    @property
    def needs_embedded_nats(self) -> bool:
        return self.nats_url is None

    @property
    def needs_embedded_postgres(self) -> bool:
        return self.database_url is None

    def with_urls(self, nats_url: str | None, database_url: str | None) -> Settings:
        """A copy with the URLs filled in (e.g. after starting embedded servers)."""
        return Settings(
            nats_url=nats_url or self.nats_url,
            database_url=database_url or self.database_url,
            namespace=self.namespace,
            js_replicas=self.js_replicas,
        )

    def to_env(self) -> dict[str, str]:
        """Environment variables that make a child process resolve the same settings."""
        env = {ENV_NAMESPACE: self.namespace}
        if self.nats_url:
            env[ENV_NATS_URL] = self.nats_url
        if self.database_url:
            env[ENV_DATABASE_URL] = self.database_url
        if self.js_replicas is not None:
            env[ENV_JS_REPLICAS] = str(self.js_replicas)
        return env

    def require(self) -> Settings:
        """Raise a clear error if a URL is missing (services never start embedded servers)."""
        missing = [
            f"{flag} / ${env}"
            for value, flag, env in (
                (self.nats_url, "--nats-url", ENV_NATS_URL),
                (self.database_url, "--database-url", ENV_DATABASE_URL),
            )
            if not value
        ]
        if missing:
            raise ValueError("missing setting(s): " + ", ".join(missing))
        return self


def resolve(
    nats_url: str | None = None,
    database_url: str | None = None,
    namespace: str | None = None,
    environ: Mapping[str, str] | None = None,
    js_replicas: int | None = None,
) -> Settings:
    """Resolve settings: explicit argument, else environment variable, else default/None."""
    env = os.environ if environ is None else environ
    return Settings(
        nats_url=nats_url or env.get(ENV_NATS_URL) or None,
        database_url=database_url or env.get(ENV_DATABASE_URL) or None,
        namespace=validate_namespace(namespace or env.get(ENV_NAMESPACE) or DEFAULT_NAMESPACE),
        js_replicas=parse_js_replicas(js_replicas) or parse_js_replicas(env.get(ENV_JS_REPLICAS)),
    )


# --------------------------------------------------------------------------- Postgres URLs


def _split(url: str) -> tuple[str, str, str, str, str, str]:
    """(scheme, userinfo, hostport, path, query, fragment) without lowercasing anything."""
    parts = urlsplit(url)
    base = parts.scheme.split("+", 1)[0].lower()
    if base not in _PG_SCHEMES:
        raise ValueError(f"not a PostgreSQL URL: {redact_url(url)}")
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at:
        userinfo, hostport = "", parts.netloc
    return base, userinfo, hostport, parts.path, parts.query, parts.fragment


def _normalize(url: str, scheme: str) -> str:
    _, userinfo, hostport, path, query, fragment = _split(url)
    # libpq's percent-encoded socket directory in the host part -> ?host=/dir
    if unquote(hostport).startswith("/"):
        host, port = unquote(hostport), ""
        m = re.match(r"^(.*):(\d+)$", host)
        if m:
            host, port = m.group(1), m.group(2)
        params = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != "host"]
        params.insert(0, ("host", host))
        if port and not any(k == "port" for k, _ in params):
            params.append(("port", port))
        query = urlencode(params, safe="/")
        hostport = ""
    netloc = f"{userinfo}@{hostport}" if userinfo else hostport
    return urlunsplit((scheme, netloc, path, query, fragment))


def sqlalchemy_url(url: str) -> str:
    """``postgresql+asyncpg://…`` for SQLAlchemy's async engine (and Alembic)."""
    return _normalize(url, "postgresql+asyncpg")


def asyncpg_dsn(url: str) -> str:
    """Plain ``postgresql://…`` DSN for ``asyncpg.connect``/``create_pool``."""
    return _normalize(url, "postgresql")


def database_name(url: str) -> str:
    """The database a URL points at ('' when it names none)."""
    return unquote(_split(url)[3].lstrip("/"))


def with_database(url: str, name: str) -> str:
    """The same server and credentials, another database; keeps the URL's scheme."""
    parts = urlsplit(url)
    _split(url)  # validates the scheme
    return urlunsplit(parts._replace(path="/" + quote(name, safe="")))


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***``, for logs and `autellix up` output."""
    parts = urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user, password = userinfo.split(":", 1)
    if not password:
        return url
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hostport}"))
