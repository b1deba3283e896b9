"""Dashboard scoping (`services/frontend/ui_scope.py`): a tenant's snapshot holds only its own
programs, calls and decisions, and no id of anyone else's; admins and open APIs see everything."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from autellix.services.frontend.ui_scope import (
    EVERYTHING,
    admin_tenants,
    scope_of,
    scoped_rows,
)
from autellix.services.frontend.ui_view import build_snapshot
from autellix.store.ui_queries import WindowLimits, WindowRows

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _call(cid: str, program_id: str, **kw: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": cid, "program_id": program_id, "thread_id": "main", "client_call_id": None,
        "parent_ids": [], "status": "finished", "level": 0, "engine_id": "e1", "attempts": 1,
        "preemptions": 0, "accepted_at": T0, "dispatched_at": T0,
        "started_at": T0 + timedelta(seconds=0.1), "finished_at": T0 + timedelta(seconds=2),
        "prompt_tokens": 4, "completion_tokens": 2, "cached_tokens": 0, "service": 2.0,
        "queue_s": 0.1, "run_s": 1.9, "finish_reason": "length", "error_code": None,
        "aged": False,
    }  # fmt: skip
    row.update(kw)
    return row


def _program(pid: str, tenant: str | None) -> dict[str, Any]:
    return {
        "id": pid, "status": "open", "created_at": T0, "closed_at": None, "last_call_at": T0,
        "last_finish_at": None, "service": 1.0, "total_service": 1.0, "attained": 1.0,
        "waiting_s": 0.0, "run_s": 1.0, "calls_total": 1, "calls_finished": 1,
        "prompt_tokens": 4, "completion_tokens": 2, "engine_affinity": "e1", "meta": {},
        "tenant": tenant,
    }  # fmt: skip


_ENGINE = {
    "id": "e1", "backend": "sim", "model": "m", "status": "up", "max_batch": 8, "running": 1,
    "waiting": 0, "kv_cache_usage": 0.1, "heartbeat_age_s": 0.5,
}  # fmt: skip


def _rows() -> WindowRows:
    preempt = {
        "call_id": "c-a1", "at": T0 + timedelta(seconds=1), "kind": "preempt", "level": 0,
        "engine_id": "e1", "reason": "for a higher level", "value": None,
    }  # fmt: skip
    return WindowRows(
        now=T0 + timedelta(seconds=3),
        engines=[_ENGINE],
        programs=[_program("p-a", "acme"), _program("p-b", "globex"), _program("p-n", None)],
        calls=[
            _call("c-a1", "p-a", preemptions=1),
            _call("c-a2", "p-a"),
            _call("c-b1", "p-b"),
            _call("c-n1", "p-n"),
            _call("c-orphan", "p-cut"),  # its program was cut by the programs' LIMIT
        ],
        events=[
            {**preempt, "other_call_id": "c-b1"},  # acme's call preempted for globex's
            {**preempt, "call_id": "c-a2", "other_call_id": "c-a1"},  # for its own
            {**preempt, "call_id": "c-b1", "other_call_id": "c-a1"},
        ],
        depth=[{"engine_id": "e1", "level": 0, "status": "running", "n": 4}],
    )


def test_a_tenant_sees_only_its_programs_calls_and_decisions() -> None:
    rows = _rows()
    mine = scoped_rows(rows, "acme")
    assert [p["id"] for p in mine.programs] == ["p-a"]
    assert [c["id"] for c in mine.calls] == ["c-a1", "c-a2"]
    assert [(e["call_id"], e["other_call_id"]) for e in mine.events] == [
        ("c-a1", None),  # the decision stays, the other tenant's call id does not
        ("c-a2", "c-a1"),
    ]
    assert mine.engines == rows.engines and mine.depth == rows.depth  # counts, not calls
    snap = json.dumps(build_snapshot(mine, WindowLimits(), {}, "http://jaeger:16686"))
    for other in ("p-b", "c-b1", "p-n", "c-n1", "globex", "c-orphan", "p-cut"):
        assert other not in snap, other
    assert len(rows.calls) == 5 and rows.events[0]["other_call_id"] == "c-b1"  # not mutated


def test_programs_without_a_tenant_are_nobodys_in_a_scoped_view() -> None:
    assert [p["id"] for p in scoped_rows(_rows(), "nobody").programs] == []


def test_scope_of_viewers() -> None:
    admins = frozenset({"ops"})
    assert scope_of(None, admins) is EVERYTHING  # no keys: the API is open
    assert scope_of("ops", admins) is EVERYTHING
    assert scope_of("acme", admins) == "acme"


def test_admin_tenants_from_the_environment() -> None:
    assert admin_tenants({}) == {"default"}  # the tenant of the key `autellix up` writes
    assert admin_tenants({"AUTELLIX_UI_ADMIN_TENANTS": " ops, sre "}) == {"ops", "sre"}
    assert admin_tenants({"AUTELLIX_UI_ADMIN_TENANTS": ""}) == frozenset()  # nobody
    with pytest.raises(ValueError, match=r"AUTELLIX_UI_ADMIN_TENANTS.*o ps"):
        admin_tenants({"AUTELLIX_UI_ADMIN_TENANTS": "o ps"})
