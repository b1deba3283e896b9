"""Dashboard sessions: a signed, expiring cookie a browser gets for pasting a valid API key.

Why a cookie: a browser cannot put `Authorization: Bearer` on a page load or an `EventSource`,
so the dashboard's login form (`ui_login.py`) trades a key for this cookie once, and every `/ui`
data route accepts either the cookie or the Bearer header (`viewer`).

What the cookie holds, and why it is safe to hand out: `v1:<tenant>:<expires>:<nonce>:<sig>`,
where `sig` is an HMAC-SHA256 of the rest under a secret derived from the API key that logged in
(PBKDF2-SHA256, 100 000 rounds, computed once per key and process). So

* the key itself is never in the cookie, and a leaked cookie does not make guessing a weakly
  chosen key any faster than PBKDF2 allows;
* every frontend replica that reads the same key file accepts the same cookies (no shared
  session store, nothing for a load balancer to pin);
* removing a key from the key file (and restarting the frontend) ends its sessions: no key left
  of that tenant reproduces the signature;
* the cookie expires (`AUTELLIX_UI_SESSION_S`, default 8 hours) both in the browser and in the
  signed value, so a copied cookie stops working too.

The tenant comes from the key file at login and is signed into the cookie (`Viewer.tenant`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from autellix.runtime.api_keys import tenant_of
from autellix.runtime.settings import checked_env_float

#: the cookie's name; it is sent only to `/ui` (its Path)
COOKIE = "autellix_ui_session"
COOKIE_PATH = "/ui"
DEFAULT_SESSION_S = 8 * 3600.0
MIN_SESSION_S = 60.0
_ROUNDS = 100_000
_SALT = b"autellix-ui-session-v1"
_TOKEN_RE = re.compile(
    r"^v1:(?P<tenant>[A-Za-z0-9_.-]{1,64}):(?P<exp>[0-9]{1,12}):(?P<nonce>[A-Za-z0-9_-]{16})"
    r":(?P<sig>[0-9a-f]{64})$"
)


def session_seconds(env: Mapping[str, str] | None = None) -> float:
    """`AUTELLIX_UI_SESSION_S` (how long a login lasts); a value that does not parse is a
    start-up error naming the variable, not a silent default."""
    return checked_env_float(
        "AUTELLIX_UI_SESSION_S",
        DEFAULT_SESSION_S,
        minimum=MIN_SESSION_S,
        maximum=400 * 86400,  # browsers cap cookies at 400 days
        env=env,
    )


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who is looking: `tenant` None when the API is open (no keys), `via` how it was shown."""

    tenant: str | None
    via: str  # "open" | "cookie" | "bearer"
    expires: float | None = None


class SessionSigner:
    """Issues and checks session cookies for one key file (key -> tenant)."""

    def __init__(self, keys: Mapping[str, str], lifetime_s: float) -> None:
        self.keys = dict(keys)
        self.lifetime_s = lifetime_s
        self._by_tenant: dict[str, list[str]] = {}
        for key, tenant in self.keys.items():
            self._by_tenant.setdefault(tenant, []).append(key)
        self._secrets: dict[str, bytes] = {}

    async def _secret(self, key: str) -> bytes:
        secret = self._secrets.get(key)
        if secret is None:  # PBKDF2 takes tens of ms: off the event loop, once per key
            secret = await asyncio.to_thread(
                hashlib.pbkdf2_hmac, "sha256", key.encode(), _SALT, _ROUNDS
            )
            self._secrets[key] = secret
        return secret

    async def issue(self, key: str, now: float | None = None) -> tuple[str, str, float] | None:
        """(cookie value, tenant, expiry in epoch seconds) for a known key, else None."""
        tenant = tenant_of(f"Bearer {key}", self.keys) if key else None
        if tenant is None:
            return None
        known = next(k for k in self._by_tenant[tenant] if hmac.compare_digest(k, key))
        expires = int((time.time() if now is None else now) + self.lifetime_s)
        body = f"v1:{tenant}:{expires}:{secrets.token_urlsafe(12)}"
        sig = hmac.new(await self._secret(known), body.encode(), hashlib.sha256).hexdigest()
        return f"{body}:{sig}", tenant, float(expires)

    async def check(self, value: str | None, now: float | None = None) -> Viewer | None:
        """The viewer a cookie value stands for, or None (malformed, expired, or signed by no
        key in the file)."""
        m = _TOKEN_RE.match(value or "")
        if m is None:
            return None
        expires = int(m["exp"])
        if expires <= (time.time() if now is None else now):
            return None
        body = value.rsplit(":", 1)[0] if value else ""
        for key in self._by_tenant.get(m["tenant"], ()):
            want = hmac.new(await self._secret(key), body.encode(), hashlib.sha256).hexdigest()
            if hmac.compare_digest(want, m["sig"]):
                return Viewer(m["tenant"], "cookie", float(expires))
        return None


def is_https(scope: Mapping[str, Any], headers: Mapping[str, str]) -> bool:
    """Whether the browser reached us over https: directly, or through a proxy that says so.
    (Only used to mark the cookie Secure, which a spoofed header can only make stricter.)"""
    if scope.get("scheme") == "https":
        return True
    forwarded = headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return forwarded == "https"


async def viewer(
    signer: SessionSigner | None, authorization: str | None, cookie: str | None
) -> Viewer | None:
    """Who a request comes from: anyone when there are no keys (`signer` None), else the tenant
    of a valid Bearer key or session cookie; None: nobody we know."""
    if signer is None:
        return Viewer(None, "open")
    if authorization:
        tenant = tenant_of(authorization, signer.keys)
        if tenant is not None:
            return Viewer(tenant, "bearer")
    return await signer.check(cookie)
