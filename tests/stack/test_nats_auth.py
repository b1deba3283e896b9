"""Per-role NATS users on a real stack: the server refuses what a role may not do.

The stack runs as `autellix up` runs it (``StackConfig(auth=True)``: generated users, the
embedded nats-server loading their permissions) on the test Postgres. A second plain NATS
connection with the *client* credentials tries what a hostile client would (read another
client's replies, read the namespace's internal traffic, forge a Dispatch, a Control, a token
delta); nats-server answers each with a permissions violation and nothing is delivered, while an
honest client on the same credentials still runs calls. An engine cannot publish a Dispatch
either, and a connection without credentials is not let in.
"""

from __future__ import annotations

import asyncio
import stat
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import nats
import pytest
import pytest_asyncio
from nats.errors import Error as NatsError

from autellix.client import Client, NatsConnectError
from autellix.local.stack import EngineConfig, Stack, StackConfig
from autellix.runtime.nats_permissions import Role
from autellix.runtime.settings import Settings
from autellix.transport import bus

NAMESPACE = "natsauth"


@pytest_asyncio.fixture(scope="module")
async def stack(
    tmp_path_factory: pytest.TempPathFactory, make_database: Callable[..., str]
) -> AsyncIterator[Stack]:
    config = StackConfig(
        engines=[EngineConfig("sim", 4)],
        ephemeral=True,
        data_dir=tmp_path_factory.mktemp("authstack"),
        auth=True,
    )
    settings = Settings(nats_url=None, database_url=make_database(), namespace=NAMESPACE)
    async with Stack(settings, config) as s:
        yield s


class Violations:
    """A connection's asynchronous server errors (nats-server reports refused subscriptions and
    publishes as ``-ERR 'Permissions Violation ...'``)."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    async def on_error(self, exc: Exception) -> None:
        self.errors.append(str(exc))

    async def wait_for(self, kind: str, subject: str, timeout_s: float = 5.0) -> None:
        for _ in range(int(timeout_s / 0.05)):
            if any(
                f'violation for {kind} to "{subject.lower()}"' in e.lower() for e in self.errors
            ):
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"no permissions violation for {subject}: {self.errors}")


async def _connect(stack: Stack, role: Role, errors: Violations) -> Any:
    assert stack.settings.nats_url is not None
    return await nats.connect(
        stack.settings.nats_url, error_cb=errors.on_error, max_reconnect_attempts=0,
        **stack.user_options(role),
    )  # fmt: skip


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _client(stack: Stack) -> Client:
    assert stack.credentials is not None
    return Client(
        stack.settings.nats_url,
        namespace=NAMESPACE,
        user_file=str(stack.credentials.user_files[Role.client]),
    )


@pytest.mark.timeout(120)
async def test_credentials_are_private_files(stack: Stack) -> None:
    assert stack.credentials is not None
    for path in [*stack.credentials.user_files.values(), stack.credentials.server_config]:
        assert _mode(path) == 0o600


@pytest.mark.timeout(120)
async def test_no_credentials_no_connection(stack: Stack) -> None:
    assert stack.settings.nats_url is not None
    with pytest.raises((NatsError, OSError)) as info:
        await nats.connect(
            stack.settings.nats_url, max_reconnect_attempts=0, allow_reconnect=False,
            connect_timeout=3,
        )  # fmt: skip
    assert "authorization" in str(info.value).lower() or isinstance(info.value, NatsError)


@pytest.mark.timeout(120)
async def test_autellix_client_with_bad_credentials_fails_fast(
    stack: Stack, tmp_path: Path
) -> None:
    """The Python client and a service's bus connection are refused with `NatsConnectError` at
    the first 'Authorization Violation', not retried forever (nats-py's first connect with
    max_reconnect_attempts=-1 would loop)."""
    assert stack.credentials is not None
    wrong = tmp_path / "wrong-user.json"
    real = stack.credentials.user_files[Role.client].read_text()
    wrong.write_text(real.replace('"password": "', '"password": "x'))
    for user_file in (None, str(wrong)):
        started = time.monotonic()
        with pytest.raises(NatsConnectError) as info:
            async with Client(stack.settings.nats_url, namespace=NAMESPACE, user_file=user_file):
                pass
        assert "refused the credentials" in str(info.value)
        assert time.monotonic() - started < 10
    started = time.monotonic()
    with pytest.raises(NatsConnectError):
        await bus.connect(
            str(stack.settings.nats_url), "test-bad-service", user="nobody", password="x"
        )
    assert time.monotonic() - started < 10


@pytest.mark.timeout(120)
async def test_client_cannot_snoop_or_forge_and_honest_client_runs(stack: Stack) -> None:
    subjects = stack.subjects
    engine_id = stack.engine_ids[0]
    errors = Violations()
    hostile = await _connect(stack, Role.client, errors)
    engine_errors = Violations()
    engine = await _connect(stack, Role.engine, engine_errors)
    try:
        seen: list[str] = []

        async def record(msg: Any) -> None:
            seen.append(msg.subject)

        for subject in ("_INBOX.>", f"{NAMESPACE}.>", subjects.heartbeat):
            await hostile.subscribe(subject, cb=record)
            await errors.wait_for("subscription", subject)
        # what an engine would receive, watched with the engine's own credentials
        forged: list[str] = []

        async def record_forged(msg: Any) -> None:
            forged.append(msg.subject)

        await engine.subscribe(subjects.control(engine_id), cb=record_forged)
        await engine.subscribe(subjects.dispatch_direct(engine_id), cb=record_forged)
        await engine.flush()
        for subject in (
            subjects.dispatch(engine_id, 0),
            subjects.dispatch_direct(engine_id),
            subjects.control(engine_id),
            subjects.heartbeat,
            subjects.sched_calls,
            "_INBOX.autellix-frontend.forged.1",  # a token delta into another party's inbox
        ):
            await hostile.publish(subject, b'{"v":1}')
            await errors.wait_for("publish", subject)

        await asyncio.sleep(0.3)
        assert forged == [], forged  # the engine got none of the forged messages
        await engine.close()  # (it would now see the honest call's real dispatch)

        async with _client(stack) as client, client.program() as prog:
            result = await prog.call("hello", max_tokens=4, timeout=30.0)
        assert result.text is not None
        await asyncio.sleep(0.3)
        assert seen == [], seen  # not another client's replies, not the internal traffic
        assert hostile.is_connected  # refused, not dropped: the server stays in charge
    finally:
        await hostile.close()
        await engine.close()


@pytest.mark.timeout(120)
async def test_engine_cannot_publish_dispatches(stack: Stack) -> None:
    errors = Violations()
    engine = await _connect(stack, Role.engine, errors)
    try:
        for subject in (
            stack.subjects.dispatch(stack.engine_ids[0], 1),
            stack.subjects.dispatch_direct(stack.engine_ids[0]),
            stack.subjects.control(stack.engine_ids[0]),
            stack.subjects.submit,
        ):
            await engine.publish(subject, b"{}")
            await errors.wait_for("publish", subject)
    finally:
        await engine.close()
