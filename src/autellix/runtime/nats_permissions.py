"""Which NATS subjects each role may publish and subscribe to: one pure function of `Subjects`.

Why per role: with one shared NATS user, any connection could read another program's prompt and
token deltas (subscribe ``_INBOX.>`` or the namespace), forge an engine ``Control`` or a
``Dispatch``. nats-server enforces these allow lists per user (``authorization { users [...] }``;
`autellix.local.nats_credentials` renders them), so a client holding client credentials can only
send requests to the frontend and read replies on its own inbox prefix.

Inboxes: each user gets the prefix ``_INBOX.<user>`` (`inbox_prefix`, passed to nats-py's
``connect(inbox_prefix=...)``). NATS wildcards match whole tokens, so the user name is a token of
its own: the frontend and the engines, which answer clients, publish to ``_INBOX.>``, while a
client may subscribe only under ``_INBOX.<its user>.>``.

JetStream: the services use the JetStream API (``$JS.API.>``: stream/consumer management, pull
requests) and acknowledgements (``$JS.ACK.>``); clients use neither. A stored message still needs
publish permission on its stream subject, so only schedulers add to the dispatch stream; the
calls stream takes the frontend's accepted calls and the ``ScheduleCall`` re-queues that
schedulers (calls of a lost engine, reconciliation) and engines (calls handed back on drain or a
backend death) publish for calls already in Postgres. The API itself is not split per stream: a
compromised service could manage streams; the roles protect against clients and against one
service kind forging another's messages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from autellix.wire.subjects import Subjects

__all__ = ["Permissions", "Role", "inbox_prefix", "role_permissions", "validate_user"]

_USER_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_JS_API = "$JS.API.>"
_JS_ACK = "$JS.ACK.>"
_ANY_INBOX = "_INBOX.>"


class Role(StrEnum):
    """The parties of a deployment, each with its own NATS user."""

    client = "client"
    frontend = "frontend"
    scheduler = "scheduler"
    engine = "engine"


@dataclass(frozen=True)
class Permissions:
    """Allow lists; everything else is denied by nats-server (permissions violation)."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]


def validate_user(user: str) -> str:
    """A user name usable as one subject token (it is part of the user's inbox prefix)."""
    if not _USER_RE.match(user):
        raise ValueError(f"invalid NATS user {user!r}: use 1-64 characters from A-Z a-z 0-9 _ -")
    return user


def inbox_prefix(user: str) -> str:
    """The inbox prefix of `user`'s connections: its replies arrive under ``<prefix>.>``."""
    return f"_INBOX.{validate_user(user)}"


def role_permissions(subjects: Subjects, role: Role, user: str) -> Permissions:
    """The publish/subscribe allow lists of `user` acting as `role` in `subjects`' namespace."""
    own_inbox = f"{inbox_prefix(user)}.>"
    requests = (
        subjects.submit,
        subjects.program_open,
        subjects.program_close,
        subjects.program_cancel,
        subjects.cancel,
        subjects.resume,
    )
    engine = subjects.dispatch_prefix
    if role is Role.client:
        return Permissions(publish=requests, subscribe=(own_inbox,))
    if role is Role.frontend:
        return Permissions(
            # replies to clients; accepted calls; the direct hop; a cancel of a running call
            # goes to its engine as a Control (`services/frontend/cancel.py`)
            publish=(
                _ANY_INBOX,
                subjects.sched_calls,
                subjects.sched_direct,
                f"{engine}.*.control",
                _JS_API,
                _JS_ACK,
            ),
            subscribe=(*requests, subjects.heartbeat, own_inbox),
        )
    if role is Role.scheduler:
        return Permissions(
            publish=(
                _ANY_INBOX,  # answers to the frontend's direct hop
                subjects.dispatch_wildcard(),
                subjects.sched_calls,  # re-queues of a lost engine's calls, reconciliation
                f"{engine}.*.direct",
                f"{engine}.*.control",
                _JS_API,
                _JS_ACK,
            ),
            subscribe=(subjects.sched_direct, subjects.heartbeat, subjects.reports, own_inbox),
        )
    if role is Role.engine:
        return Permissions(
            publish=(
                _ANY_INBOX,  # token deltas and finals to the caller, direct-hop answers
                subjects.heartbeat,
                subjects.reports,
                subjects.sched_calls,  # calls handed back (drain, backend death)
                _JS_API,
                _JS_ACK,
            ),
            subscribe=(f"{engine}.*.direct", f"{engine}.*.control", own_inbox),
        )
    raise ValueError(f"unknown role {role!r}")
