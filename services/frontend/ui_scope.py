"""Who sees what on the dashboard: operators every tenant's programs, a tenant only its own.

With API keys, a viewer's tenant is the one of the key it logged in with (`ui_session.Viewer`).
Tenants named in `AUTELLIX_UI_ADMIN_TENANTS` (comma-separated; default `default`, the tenant of
the key `autellix up` writes) see everything, as everyone does when the API has no keys. Any
other tenant sees only its own programs and their calls: other tenants' programs and calls are
left out of its snapshots, programs without a tenant (made over NATS, or over HTTP without keys)
too, and a decision on one of its calls that names another tenant's call (preempted for it)
keeps the decision but not that call's id. What every viewer keeps: the engines and the queue
depth per engine and level, which are counts of everyone's calls (the load its calls meet),
never anyone's program or call ids.

The rows are scoped before anything is derived from them (`scoped_rows`), so nothing left out
can reach a critical path, a dependency or a trace link of the scoped snapshot.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping

from autellix.store.ui_queries import WindowRows

ADMIN_TENANTS_ENV = "AUTELLIX_UI_ADMIN_TENANTS"
DEFAULT_ADMIN_TENANTS = ("default",)
_TENANT_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

#: the scope of a viewer who sees everything (a tenant name scopes to that tenant)
EVERYTHING: str | None = None


def admin_tenants(env: Mapping[str, str] | None = None) -> frozenset[str]:
    """`AUTELLIX_UI_ADMIN_TENANTS`; a name that is not a tenant name is a start-up error (a typo
    must not silently turn an operator into a tenant, or a tenant into an operator)."""
    env = os.environ if env is None else env
    raw = env.get(ADMIN_TENANTS_ENV)
    if raw is None:
        return frozenset(DEFAULT_ADMIN_TENANTS)
    names = [n.strip() for n in raw.split(",") if n.strip()]
    bad = [n for n in names if not _TENANT_RE.match(n)]
    if bad:
        raise ValueError(f"{ADMIN_TENANTS_ENV}: not tenant names: {', '.join(bad)}")
    return frozenset(names)


def scope_of(tenant: str | None, admins: frozenset[str]) -> str | None:
    """What a viewer sees: `EVERYTHING` without keys (tenant None) or for an admin tenant, else
    its tenant's name."""
    if tenant is None or tenant in admins:
        return EVERYTHING
    return tenant


def scoped_rows(rows: WindowRows, tenant: str) -> WindowRows:
    """`rows` as `tenant` may see them (module doc): its programs, their calls and their calls'
    decisions; engines and queue depth as they are."""
    programs = [p for p in rows.programs if p.get("tenant") == tenant]
    mine = {p["id"] for p in programs}
    calls = [c for c in rows.calls if c["program_id"] in mine]
    ids = {c["id"] for c in calls}
    events = []
    for e in rows.events:
        if e["call_id"] not in ids:
            continue
        if e.get("other_call_id") is not None and e["other_call_id"] not in ids:
            e = {**e, "other_call_id": None}  # another tenant's call: the decision, not the id
        events.append(e)
    return dataclasses.replace(rows, programs=programs, calls=calls, events=events)
