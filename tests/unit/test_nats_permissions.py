"""Per-role NATS permissions (`runtime.nats_permissions`) and user files (`runtime.nats_auth`)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autellix.local.nats_credentials import generate, server_config
from autellix.runtime.nats_auth import read_user_file
from autellix.runtime.nats_permissions import Role, inbox_prefix, role_permissions
from autellix.wire.subjects import Subjects


def _matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: `*` one token, `>` one or more trailing tokens."""
    p, s = pattern.split("."), subject.split(".")
    for i, tok in enumerate(p):
        if tok == ">":
            return len(s) > i
        if i >= len(s) or (tok != "*" and tok != s[i]):
            return False
    return len(p) == len(s)


def _may(allow: tuple[str, ...], subject: str) -> bool:
    return any(_matches(a, subject) for a in allow)


S = Subjects("ns1")
REQUESTS = [S.submit, S.program_open, S.program_close, S.program_cancel, S.cancel, S.resume]


def test_client_sends_only_frontend_requests_and_reads_only_its_inbox() -> None:
    perms = role_permissions(S, Role.client, "alice")
    assert all(_may(perms.publish, r) for r in REQUESTS)
    refused = [S.dispatch("e1", 0), S.control("e1"), S.dispatch_direct("e1"), S.heartbeat]
    refused += [S.reports, S.sched_calls, S.sched_direct, "_INBOX.bob.x.1", "$JS.API.INFO"]
    for forged in refused:
        assert not _may(perms.publish, forged), forged
    assert _may(perms.subscribe, "_INBOX.alice.abc.1")
    for other in ("_INBOX.bob.abc.1", "_INBOX.abc", S.heartbeat, S.dispatch("e1", 0), S.submit):
        assert not _may(perms.subscribe, other), other
    # a subscription is allowed only if it is inside an allowed pattern: not `_INBOX.>`
    assert perms.subscribe == (f"{inbox_prefix('alice')}.>",)


def test_only_engines_publish_tokens_heartbeats_reports_only_schedulers_dispatch() -> None:
    eng = role_permissions(S, Role.engine, "e")
    sched = role_permissions(S, Role.scheduler, "s")
    fe = role_permissions(S, Role.frontend, "f")
    for subject in (S.heartbeat, S.reports):
        assert _may(eng.publish, subject)
        assert not _may(sched.publish, subject) and not _may(fe.publish, subject)
    for subject in (S.dispatch("e1", 3), S.dispatch_direct("e1")):
        assert _may(sched.publish, subject)
        assert not _may(eng.publish, subject) and not _may(fe.publish, subject)
    assert not _may(eng.publish, S.control("e1")) and _may(sched.publish, S.control("e1"))
    # accepted calls (frontend) and re-queues of calls already in Postgres: a lost engine's
    # calls (scheduler), calls handed back on drain (engine); never a client
    assert all(_may(p.publish, S.sched_calls) for p in (fe, sched, eng))
    assert not _may(role_permissions(S, Role.client, "c").publish, S.sched_calls)
    assert all(_may(fe.subscribe, r) for r in REQUESTS)
    assert not any(_may(eng.subscribe, r) or _may(sched.subscribe, r) for r in REQUESTS)
    # another namespace is out of reach for every role
    other = Subjects("ns2")
    for role in Role:
        perms = role_permissions(S, role, "u")
        assert not _may(perms.publish, other.submit) and not _may(perms.subscribe, other.submit)


def test_generated_credentials_are_private_and_distinct(tmp_path: Path) -> None:
    creds = generate(tmp_path / "auth", S)
    users = [read_user_file(p) for p in creds.user_files.values()]
    assert {u.user for u in users} == {f"autellix-{r.value}" for r in Role}
    assert len({u.password for u in users}) == len(Role)
    for path in [*creds.user_files.values(), creds.server_config]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = creds.server_config.read_text()
    assert all(u.password in text for u in users) and "authorization" in text
    assert generate(tmp_path / "auth", S).user_files[Role.client].read_text() != json.dumps(
        users[0].to_json()
    )


def test_server_config_quotes_everything() -> None:
    from autellix.runtime.nats_auth import NatsUser

    user = NatsUser(user="u", password='p"w}{', inbox_prefix="_INBOX.u")
    text = server_config([(user, role_permissions(S, Role.client, "u"))])
    assert '"p\\"w}{"' in text


@given(st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode),
                 st.dictionaries(st.text(max_size=8), st.one_of(st.none(), st.integers(),
                                 st.text(max_size=8)), max_size=4).map(
                     lambda d: json.dumps(d).encode())))  # fmt: skip
def test_user_file_parsing_never_crashes(
    tmp_path_factory: pytest.TempPathFactory, raw: bytes
) -> None:
    path = tmp_path_factory.mktemp("uf") / "u.json"
    path.write_bytes(raw)
    try:
        user = read_user_file(path)
    except ValueError as exc:
        assert str(path) in str(exc)
    else:
        assert user.user and user.password and user.inbox_prefix


# --------------------------------------------------------------------------- HTTP API key files

_KEY = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=16, max_size=40
).filter(lambda k: not k.startswith("#"))
_TENANT = st.from_regex(r"\A[A-Za-z0-9_.-]{1,12}\Z")


@given(st.dictionaries(_KEY, _TENANT, min_size=1, max_size=5))
def test_api_key_file_round_trips(keys: dict[str, str]) -> None:
    from autellix.runtime import api_keys

    text = "# comment\n\n" + "".join(f"  {k}\t{t}\n" for k, t in keys.items())
    assert api_keys.parse(text) == keys
    for key, tenant in keys.items():
        assert api_keys.tenant_of(f"Bearer {key}", keys) == tenant
        assert api_keys.tenant_of(f"bearer  {key} ", keys) == tenant
        assert api_keys.tenant_of(f"Basic {key}", keys) is None
        assert api_keys.tenant_of(key, keys) is None


@given(st.text(max_size=300))
def test_api_key_file_parsing_never_crashes(text: str) -> None:
    from autellix.runtime import api_keys

    try:
        keys = api_keys.parse(text)
    except ValueError as exc:
        assert "line" in str(exc) or "no keys" in str(exc)
    else:
        assert keys and all(len(k) >= 16 for k in keys)


def test_generated_api_key_file(tmp_path: Path) -> None:
    from autellix.runtime import api_keys

    key = api_keys.generate(tmp_path / "k" / "api-keys.txt")
    assert api_keys.read(tmp_path / "k" / "api-keys.txt") == {key: api_keys.DEFAULT_TENANT}
    assert stat.S_IMODE((tmp_path / "k" / "api-keys.txt").stat().st_mode) == 0o600
