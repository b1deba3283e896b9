"""The first NATS connection of a process, refused explicitly instead of retried forever.

nats-py with ``max_reconnect_attempts=-1`` (what every Autellix connection uses, so a restarted
or failed-over server is reconnected to) also retries the *first* connect forever, and it does so
for every error: a server refusing the credentials ('Authorization Violation') makes the caller
hang with an error log line every reconnect wait. Credentials do not get better by retrying, so
an authorization error ends the attempt at once with `NatsConnectError`; a server that is not up
is waited for (a service started before NATS) up to `within_s` seconds, if one is given. A server
certificate that this side does not trust (no or the wrong ``AUTELLIX_NATS_CA_FILE``) does not get
better either and ends it the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = [
    "NatsConnectError",
    "connect_refusing_bad_credentials",
    "is_authorization_error",
    "is_untrusted_certificate",
]


class NatsConnectError(ConnectionError):
    """No NATS connection: the server refused the credentials, or none answered in time."""

    def __init__(self, servers: list[str], reason: str, last_error: BaseException | None) -> None:
        super().__init__(
            f"cannot connect to NATS at {','.join(servers)}: {reason}"
            + (f" (last error: {last_error!r})" if last_error is not None else "")
        )
        self.servers = servers
        self.reason = reason
        self.last_error = last_error


def is_authorization_error(exc: BaseException) -> bool:
    """True for the server's refusal of this connection's user, password or token."""
    text = str(exc).lower()
    return type(exc).__name__ == "AuthorizationError" or "authorization violation" in text


def is_untrusted_certificate(exc: BaseException) -> bool:
    """True where this side rejected the server's TLS certificate (unknown CA, wrong name)."""
    return isinstance(exc, ssl.SSLCertVerificationError)


async def connect_refusing_bad_credentials(
    connect: Callable[..., Awaitable[Any]],
    servers: list[str],
    *,
    within_s: float | None = None,
    error_cb: Callable[[Exception], Awaitable[None]] | None = None,
    **options: Any,
) -> Any:
    """``await connect(servers=servers, error_cb=..., **options)`` (``nats.connect``), ended with
    `NatsConnectError` at the first authorization error or after `within_s` seconds without a
    connection. `error_cb` still sees every error, before and after connecting."""
    refused: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
    last: list[BaseException] = []

    async def on_error(exc: Exception) -> None:
        last[:] = [exc]
        if (is_authorization_error(exc) or is_untrusted_certificate(exc)) and not refused.done():
            refused.set_result(exc)
        if error_cb is not None:
            await error_cb(exc)

    task = asyncio.ensure_future(connect(servers=servers, error_cb=on_error, **options))
    try:
        done, _ = await asyncio.wait(
            {task, refused}, timeout=within_s, return_when=asyncio.FIRST_COMPLETED
        )
    except BaseException:
        task.cancel()
        raise
    if task in done:
        refused.cancel()
        return task.result()
    task.cancel()
    with contextlib.suppress(BaseException):
        await task
    if refused.done():
        error = refused.result()
        if is_untrusted_certificate(error):
            reason = "the server's TLS certificate is not trusted (AUTELLIX_NATS_CA_FILE)"
        else:
            reason = "the server refused the credentials"
        raise NatsConnectError(servers, reason, error)
    raise NatsConnectError(
        servers, f"no server answered within {within_s:g} s", last[0] if last else None
    )
