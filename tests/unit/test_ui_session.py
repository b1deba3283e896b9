"""Dashboard session cookies (`services/frontend/ui_session.py`): what a cookie holds, and that
an expired, tampered or orphaned one (its key removed from the key file) is refused."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autellix.services.frontend.ui_session import SessionSigner, session_seconds, viewer

KEY_A = "ui-session-key-a-0123456789"
KEY_A2 = "ui-session-key-a2-0123456789"
KEY_B = "ui-session-key-b-0123456789"
KEYS = {KEY_A: "tenant-a", KEY_A2: "tenant-a", KEY_B: "tenant-b"}


async def test_a_cookie_names_its_tenant_holds_no_key_and_expires() -> None:
    signer = SessionSigner(KEYS, 60)
    issued = await signer.issue(KEY_A2)
    assert issued is not None
    value, tenant, expires = issued
    assert tenant == "tenant-a" and KEY_A2 not in value
    assert expires == pytest.approx(time.time() + 60, abs=2)
    seen = await signer.check(value)
    assert seen is not None and (seen.tenant, seen.via) == ("tenant-a", "cookie")
    assert await signer.check(value, now=expires) is None  # expired
    assert await signer.issue(KEY_A + "x") is None and await signer.issue("") is None
    # another replica reading the same key file accepts it; each login is a new value
    assert await SessionSigner(dict(KEYS), 60).check(value) is not None
    again = await signer.issue(KEY_A2)
    assert again is not None and again[0] != value


async def test_tampered_or_orphaned_cookies_are_refused() -> None:
    signer = SessionSigner(KEYS, 3600)
    issued = await signer.issue(KEY_A)
    assert issued is not None
    value = issued[0]
    head, exp, nonce, sig = value.rsplit(":", 3)
    for forged in (
        value.replace(":tenant-a:", ":tenant-b:"),
        f"{head}:{int(exp) + 3600}:{nonce}:{sig}",  # a longer life, same signature
        f"{head}:{exp}:{nonce}:{sig[::-1]}",
        value.replace("v1:", "v2:", 1),
        value + "0",
    ):
        assert await signer.check(forged) is None, forged
    # the key left the key file: its sessions end, even though its tenant has another key
    assert await SessionSigner({KEY_A2: "tenant-a", KEY_B: "tenant-b"}, 3600).check(value) is None


async def test_bearer_or_cookie_or_open() -> None:
    signer = SessionSigner(KEYS, 60)
    assert (await viewer(None, None, None)).via == "open"  # type: ignore[union-attr]
    who = await viewer(signer, f"Bearer {KEY_B}", "junk")
    assert who is not None and (who.tenant, who.via) == ("tenant-b", "bearer")
    assert await viewer(signer, f"Bearer {KEY_B}x", None) is None
    assert await viewer(signer, None, None) is None


@given(st.text(max_size=200))
async def test_any_cookie_text_is_a_viewer_or_none(text: str) -> None:
    assert await SessionSigner(KEYS, 60).check(text) is None


def test_session_lifetime_setting() -> None:
    assert session_seconds({}) == 8 * 3600
    assert session_seconds({"AUTELLIX_UI_SESSION_S": "120"}) == 120
    for bad in ("soon", "10", "1e12", "nan"):
        with pytest.raises(ValueError, match="AUTELLIX_UI_SESSION_S"):
            session_seconds({"AUTELLIX_UI_SESSION_S": bad})
