"""Back-pressure at the door: past a bound on unfinished calls, new calls get `overloaded`.

Two bounds, both on calls not yet finished or failed (queued, dispatched, running, preempted):

* the whole deployment's, `--max-unfinished-calls` (env `AUTELLIX_MAX_UNFINISHED_CALLS`,
  default 10000);
* each tenant's, `--max-unfinished-calls-per-tenant` (env
  `AUTELLIX_MAX_UNFINISHED_CALLS_PER_TENANT`, default 5000: half the deployment's, so one
  tenant cannot fill it and the others keep being admitted). A tenant is an HTTP API key's
  (`autellix.runtime.api_keys`); a call counts against the tenant of its program
  (`programs.tenant`). Calls without a tenant (NATS clients, an HTTP API without keys) are
  bounded by the deployment's bound only.

0 switches a bound off. A refused call is answered `CallError(overloaded, retryable=True)` on
NATS and HTTP 429 with `Retry-After` on the HTTP API; nothing about it is stored.

What is counted lives in Postgres, so the count is the same whichever frontend replica asks and
includes the calls every replica admitted. Counting costs one index scan
(`ix_calls_status_engine`; per tenant, joined to the program rows of the unfinished calls), so
it is refreshed at most every `refresh_s` (default 0.25 s), not per call; between refreshes this
replica adds the calls it accepted itself, per tenant too (counting them unfinished until the
next read). Before refusing, a count older than `recheck_s` (0.05 s) is read again, so a client
whose quick calls finished is not refused for them. A burst at several replicas at once
can overshoot by what the *other* replicas accept within one refresh interval; that is the price
of not counting per call, and it is bounded (replicas x their accept rate x `refresh_s`). The
per-tenant count is only taken once a call with a tenant has come: a deployment without API
keys pays nothing for it.

Why not a per-replica in-flight limit: a frontend answers `accepted` and forgets the call, so
its own in-flight count says nothing about the backlog in JetStream and the engines' queues,
which is what has to stay bounded.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from autellix.store.states import ACTIVE
from autellix.wire.protocol import CallError, ErrorCode

DEFAULT_MAX_UNFINISHED_CALLS = 10_000
DEFAULT_MAX_UNFINISHED_CALLS_PER_TENANT = 5_000
#: what a refused caller is told to wait before retrying (HTTP Retry-After, seconds)
RETRY_AFTER_S = 1
_UNFINISHED = ["queued", *ACTIVE]


async def unfinished_calls(pool: Any) -> int:
    """How many calls are accepted and not yet answered, across every replica."""
    return int(
        await pool.fetchval(
            "SELECT count(*) FROM calls WHERE status = ANY($1::text[])", _UNFINISHED
        )
    )


async def unfinished_calls_by_tenant(pool: Any) -> tuple[int, dict[str, int]]:
    """The same count in total and per tenant (calls of programs without one only in the
    total)."""
    rows = await pool.fetch(
        """SELECT p.tenant, count(*) AS n FROM calls c JOIN programs p ON p.id = c.program_id
           WHERE c.status = ANY($1::text[]) GROUP BY p.tenant""",
        _UNFINISHED,
    )
    total = sum(int(r["n"]) for r in rows)
    return total, {r["tenant"]: int(r["n"]) for r in rows if r["tenant"] is not None}


def _overloaded(what: str, count: int, limit: int) -> CallError:
    return CallError(
        code=ErrorCode.overloaded,
        message=f"{count} calls {what} are unfinished; the limit is {limit}: retry in "
        f"{RETRY_AFTER_S}s",
        retryable=True,
    )


@dataclass
class Admission:
    """Decides, per new call, whether the deployment and the call's tenant have room for it
    (see the module doc)."""

    pool: Any
    limit: int = DEFAULT_MAX_UNFINISHED_CALLS
    tenant_limit: int = DEFAULT_MAX_UNFINISHED_CALLS_PER_TENANT
    refresh_s: float = 0.25
    #: before refusing, a count older than this is taken again (so refusals recount at most
    #: 1 / recheck_s times a second under a real overload)
    recheck_s: float = 0.05
    _counted: int = 0
    _since: int = 0  # accepted by this replica since `_counted` was read
    _tenant_counted: dict[str, int] = field(default_factory=dict)
    _tenant_since: dict[str, int] = field(default_factory=dict)
    _by_tenant: bool = False  # a call with a tenant came: count per tenant from now on
    _read_at: float = -1e9
    _refreshing: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def check(self, tenant: str | None = None) -> CallError | None:
        """None when the call may be accepted (and is counted), else the `overloaded` error.
        `tenant`: the caller's (an HTTP API key's), None without one."""
        per_tenant = tenant is not None and self.tenant_limit > 0
        if self.limit <= 0 and not per_tenant:
            return None
        if per_tenant and not self._by_tenant:
            self._by_tenant = True
            self._read_at = -1e9  # the first tenant call: count per tenant now
        if time.monotonic() - self._read_at >= self.refresh_s:
            await self._refresh(self.refresh_s)
        refusal = self._refusal(tenant if per_tenant else None)
        if refusal is not None and time.monotonic() - self._read_at >= self.recheck_s:
            # the calls counted since the last read may have finished meanwhile: a sequential
            # client's quick calls would otherwise meet a small bound that they never filled
            await self._refresh(self.recheck_s)
            refusal = self._refusal(tenant if per_tenant else None)
        if refusal is not None:
            return refusal
        if per_tenant:
            assert tenant is not None
            self._tenant_since[tenant] = self._tenant_since.get(tenant, 0) + 1
        self._since += 1
        return None

    def _refusal(self, tenant: str | None) -> CallError | None:
        """The `overloaded` error when the counts say a bound is reached, else None."""
        total = self._counted + self._since
        if self.limit > 0 and total >= self.limit:
            return _overloaded("in the deployment", total, self.limit)
        if tenant is not None:
            mine = self._tenant_counted.get(tenant, 0) + self._tenant_since.get(tenant, 0)
            if mine >= self.tenant_limit:
                return _overloaded(f"of tenant {tenant}", mine, self.tenant_limit)
        return None

    def uncount(self, tenant: str | None = None) -> None:
        """An admitted call stored nothing after all (another tenant's program, a closed one,
        a duplicate): take back what `check` counted, so refused requests cannot use up the
        caller's room until the next refresh. Clamped at 0: a refresh in between already
        dropped it."""
        per_tenant = tenant is not None and self.tenant_limit > 0
        if self.limit <= 0 and not per_tenant:
            return
        self._since = max(0, self._since - 1)
        if per_tenant and self._tenant_since.get(tenant or "", 0) > 0:
            assert tenant is not None
            self._tenant_since[tenant] -= 1

    async def _refresh(self, max_age_s: float) -> None:
        """Count again unless a count younger than `max_age_s` exists (taken meanwhile)."""
        async with self._refreshing:  # one count at a time; the others use its result
            if time.monotonic() - self._read_at < max_age_s:
                return
            since_before = self._since
            tenant_before = dict(self._tenant_since)
            if self._by_tenant:
                counted, by_tenant = await unfinished_calls_by_tenant(self.pool)
            else:
                counted, by_tenant = await unfinished_calls(self.pool), {}
            # calls accepted while the count ran may or may not be in it: keep them (a
            # conservative overcount, gone at the next refresh)
            self._counted, self._since = counted, self._since - since_before
            self._tenant_counted = by_tenant
            self._tenant_since = {
                t: n - tenant_before.get(t, 0)
                for t, n in self._tenant_since.items()
                if n - tenant_before.get(t, 0) > 0
            }
            self._read_at = time.monotonic()
