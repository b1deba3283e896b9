"""What the dashboard draws, derived from one read of Postgres (`autellix.store.ui_queries`).

Pure functions from rows to the JSON snapshot the browser renders, so every rule here is tested
without a browser (tests/unit/test_dashboard_view.py):

* **engine timelines**: each call's time on its engine as segments (waiting in the engine's
  queues, running in its batch) and marks (preempted, resumed, prefix-cache hit, handed back).
  What is recorded: a call's first start (`started_at`), each preemption (a `preempt` event), its
  end and its total run time (`run_s`). Resumes are not recorded; with one preemption the resume
  time follows from the run time (run before the preemption + run after = `run_s`); after more
  than one, the span from the first preemption on is drawn as "preempted and resumed" without
  boundaries. A call handed to another engine after its engine was lost is drawn on the engine
  that has it now, with a mark where it was handed back;
* **programs**: latency so far, attained service, critical path, level, engine and tenant, from
  the program row and its calls (a program's metadata shows as is; its `class` key fills that
  column, and its `tenant` key the tenant's where the program has none);
* **call graphs**: dependencies are the explicit parents plus the previous call of the same
  thread; the critical path is walked back from the call that ended last, at each step through
  the dependency that ended last before the call was accepted (the one that held it up);
* **trace links** to Jaeger, when its UI address is configured.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote

from autellix.runtime.telemetry import program_ids
from autellix.store.ui_queries import WindowLimits, WindowRows

TERMINAL = ("finished", "failed")


def epoch_ms(at: datetime | None) -> float | None:
    return None if at is None else at.timestamp() * 1000.0


def _end(call: Mapping[str, Any], now: datetime) -> datetime:
    return call["finished_at"] or now


# --------------------------------------------------------------------------- engine timelines


def call_segments(
    call: Mapping[str, Any], events: Iterable[Mapping[str, Any]], now: datetime
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(segments, marks) of one call on its engine; times in epoch ms.

    Segment kinds: `waiting` (dispatched, not yet admitted), `running`, `preempted` (derived
    wait between a preemption and its resume), `interrupted` (preempted more than once: running
    and waiting alternate, boundaries not recorded). Mark kinds: `preempt`, `resume`,
    `cache_hit`, `requeue`, `fail`.
    """
    engine = call["engine_id"]
    segments: list[dict[str, Any]] = []
    marks: list[dict[str, Any]] = []
    evs = list(events)
    started, end = call["started_at"], _end(call, now)

    def seg(kind: str, a: datetime, b: datetime) -> None:
        if b > a:
            segments.append({"kind": kind, "start": epoch_ms(a), "end": epoch_ms(b)})

    if engine is not None and call["dispatched_at"] is not None:
        seg("waiting", call["dispatched_at"], started or end)
    preempts = [
        e for e in evs if e["kind"] == "preempt" and (started is None or e["at"] >= started)
    ]
    if started is not None:
        if not preempts:
            seg("running", started, end)
        else:
            first = preempts[0]["at"]
            seg("running", started, first)
            resumed = _resume_time(call, started, first) if len(preempts) == 1 else None
            if resumed is not None:
                seg("preempted", first, resumed)
                seg("running", resumed, end)
                marks.append({"kind": "resume", "at": epoch_ms(resumed), "derived": True})
            else:
                seg("interrupted", first, end)
    for e in evs:
        if e["kind"] in ("preempt", "requeue", "fail"):
            marks.append(
                {
                    "kind": e["kind"],
                    "at": epoch_ms(e["at"]),
                    "engine_id": e["engine_id"],
                    "other_call_id": e["other_call_id"],
                    "reason": e["reason"],
                }
            )
    if call["cached_tokens"] and started is not None:
        marks.append(
            {
                "kind": "cache_hit",
                "at": epoch_ms(started),
                "cached_tokens": call["cached_tokens"],
                "prompt_tokens": call["prompt_tokens"],
            }
        )
    marks.sort(key=lambda m: m["at"])
    return segments, marks


def _resume_time(
    call: Mapping[str, Any], started: datetime, preempted: datetime
) -> datetime | None:
    """When a once-preempted, finished call resumed: its end minus the run time left after the
    preemption (None while it runs: its total run time is not final yet)."""
    finished, run_s = call["finished_at"], call["run_s"]
    if finished is None or run_s is None:
        return None
    before = (preempted - started).total_seconds()
    after = max(0.0, run_s - before)
    resumed = finished.timestamp() - after
    return datetime.fromtimestamp(
        min(max(resumed, preempted.timestamp()), finished.timestamp()), tz=finished.tzinfo
    )


# --------------------------------------------------------------------------- call graphs


def dependencies(calls: list[Mapping[str, Any]]) -> dict[str, list[tuple[str, str]]]:
    """{call id: [(dependency id, "parent" | "thread")]} within one program's calls.

    Parents may be named by call id or by the caller's `client_call_id`; a parent not among
    `calls` (outside the window) is left out."""
    by_key: dict[str, str] = {}
    for c in calls:
        by_key[c["id"]] = c["id"]
        if c.get("client_call_id"):
            by_key.setdefault(c["client_call_id"], c["id"])
    previous: dict[str, str] = {}
    out: dict[str, list[tuple[str, str]]] = {}
    for c in sorted(calls, key=lambda c: (c["accepted_at"], c["id"])):
        deps: list[tuple[str, str]] = []
        for p in c.get("parent_ids") or ():
            if p in by_key and by_key[p] != c["id"]:
                deps.append((by_key[p], "parent"))
        before = previous.get(c["thread_id"])
        if before is not None and all(d != before for d, _ in deps):
            deps.append((before, "thread"))
        previous[c["thread_id"]] = c["id"]
        out[c["id"]] = deps
    return out


def critical_path(
    calls: list[Mapping[str, Any]],
    now: datetime,
    deps: dict[str, list[tuple[str, str]]] | None = None,
) -> list[str]:
    """The chain of calls that held the program up, first call first (see the module doc);
    `deps` is `dependencies(calls)` when the caller has it already."""
    if not calls:
        return []
    by_id = {c["id"]: c for c in calls}
    deps = dependencies(calls) if deps is None else deps
    current = max(calls, key=lambda c: (_end(c, now), c["id"]))
    path = [current["id"]]
    seen = {current["id"]}
    while True:
        gating = [
            by_id[d]
            for d, _ in deps.get(current["id"], ())
            if d not in seen and _end(by_id[d], now) <= current["accepted_at"]
        ]
        if not gating:
            break
        current = max(gating, key=lambda c: (_end(c, now), c["id"]))
        path.append(current["id"])
        seen.add(current["id"])
    return path[::-1]


def wait_run(call: Mapping[str, Any], now: datetime) -> tuple[float, float]:
    """(seconds waiting, seconds running) of a call so far: its run time is what the engines
    recorded (`run_s`, up to its last preemption while it still runs), the rest of its life
    since it was accepted is waiting."""
    run = float(call["run_s"] or 0.0)
    if call["status"] == "running" and call["started_at"] is not None and not call["preemptions"]:
        run = max(run, (now - call["started_at"]).total_seconds())
    life = (_end(call, now) - call["accepted_at"]).total_seconds()
    return max(0.0, life - run), run


# --------------------------------------------------------------------------- trace links


def trace_links(jaeger_ui: str | None, program_id: str, call_id: str | None = None) -> Any:
    """Jaeger links: the program's derived trace (every call of a client that does not trace
    itself lands there) and a search by the span attribute, which also finds the calls of a
    client that sends its own trace context (docs/observability.md, "One program, one trace")."""
    if not jaeger_ui:
        return None
    base = jaeger_ui.rstrip("/")
    trace_id = format(program_ids(program_id)[0], "032x")
    key, value, service = (
        ("autellix.call_id", call_id, "autellix-engine")
        if call_id
        else ("autellix.program_id", program_id, "autellix-frontend")
    )
    tags = quote(json.dumps({key: value}, separators=(",", ":")))
    return {
        "trace": f"{base}/trace/{trace_id}",
        "search": f"{base}/search?service={service}&tags={tags}",
    }


# --------------------------------------------------------------------------- the snapshot


def _program_row(
    p: Mapping[str, Any], calls: list[Mapping[str, Any]], now: datetime, jaeger_ui: str | None
) -> dict[str, Any]:
    meta = dict(p.get("meta") or {})
    active = [c for c in calls if c["status"] not in TERMINAL]
    latest = max(calls, key=lambda c: c["id"]) if calls else None
    level = min((c["level"] for c in active), default=latest["level"] if latest else None)
    engine = p["engine_affinity"] or (latest["engine_id"] if latest else None)
    preempted = sum(c["preemptions"] for c in calls)
    return {
        "id": p["id"],
        "status": p["status"],
        "created": epoch_ms(p["created_at"]),
        "closed": epoch_ms(p["closed_at"]),
        "latency_s": ((p["closed_at"] or now) - p["created_at"]).total_seconds(),
        "attained": p["attained"],
        "critical_service": p["service"],
        "completed_service": p["total_service"],
        "waiting_s": p["waiting_s"],
        "run_s": p["run_s"],
        "calls_total": p["calls_total"],
        "calls_finished": p["calls_finished"],
        "calls_active": len(active),
        "preemptions": preempted,
        "level": level,
        "engine": engine,
        "tenant": p.get("tenant") or meta.get("tenant"),
        "class": meta.get("class"),
        "meta": meta,
        "tokens": p["completion_tokens"],
        "links": trace_links(jaeger_ui, p["id"]),
    }


def call_view(
    c: Mapping[str, Any],
    events: Iterable[Mapping[str, Any]],
    deps: list[tuple[str, str]],
    now: datetime,
    jaeger_ui: str | None,
) -> dict[str, Any]:
    """One call as the browser draws it. Nothing in it changes once the call is finished or
    failed (whether it is on its program's critical path is in `critical_paths`, not here), so
    `ui_encode` encodes a terminal call once."""
    segments, marks = call_segments(c, events, now)
    wait_s, run_s = wait_run(c, now)
    return {
        "id": c["id"],
        "program_id": c["program_id"],
        "thread_id": c["thread_id"],
        "engine_id": c["engine_id"],
        "status": c["status"],
        "level": c["level"],
        "aged": c["aged"],
        "preemptions": c["preemptions"],
        "accepted": epoch_ms(c["accepted_at"]),
        "started": epoch_ms(c["started_at"]),
        "finished": epoch_ms(c["finished_at"]),
        "wait_s": wait_s,
        "run_s": run_s,
        "service": c["service"],
        "prompt_tokens": c["prompt_tokens"],
        "completion_tokens": c["completion_tokens"],
        "cached_tokens": c["cached_tokens"],
        "error_code": c["error_code"],
        "deps": [{"id": d, "kind": k} for d, k in deps],
        "segments": segments,
        "marks": marks,
        "links": trace_links(jaeger_ui, c["program_id"], c["id"]),
    }


class SnapshotParts:
    """A snapshot taken apart: everything but the calls (`head`), and per call what `call_view`
    needs, so an encoder may reuse what it encoded before (`ui_encode.SnapshotEncoder`)."""

    def __init__(
        self,
        rows: WindowRows,
        limits: WindowLimits,
        depth_series: dict[str, Any],
        jaeger_ui: str | None,
    ) -> None:
        now = rows.now
        self.rows, self.jaeger_ui = rows, jaeger_ui
        self.events: dict[str, list[dict[str, Any]]] = {}
        for e in rows.events:
            self.events.setdefault(e["call_id"], []).append(e)
        by_program: dict[str, list[dict[str, Any]]] = {}
        for c in rows.calls:
            by_program.setdefault(c["program_id"], []).append(c)
        self.deps = {pid: dependencies(cs) for pid, cs in by_program.items()}
        critical = {pid: critical_path(cs, now, self.deps[pid]) for pid, cs in by_program.items()}
        self.head: dict[str, Any] = {
            "now": epoch_ms(now),
            "window_s": limits.window_s,
            "limits": {
                "max_calls": limits.max_calls,
                "max_programs": limits.max_programs,
                "calls_truncated": rows.calls_truncated,
            },
            "engines": [_engine_row(e) for e in rows.engines],
            "programs": [
                _program_row(p, by_program.get(p["id"], []), now, jaeger_ui) for p in rows.programs
            ],
            "critical_paths": critical,
            "queue_depth": depth_series,
            "jaeger_ui": jaeger_ui,
        }

    def call(self, c: Mapping[str, Any]) -> dict[str, Any]:
        deps = self.deps[c["program_id"]][c["id"]]
        return call_view(c, self.events.get(c["id"], ()), deps, self.rows.now, self.jaeger_ui)


def _engine_row(e: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("id", "backend", "model", "status", "max_batch", "running", "waiting")
    return {
        **{k: e[k] for k in keys},
        "kv_cache_usage": e["kv_cache_usage"],
        "heartbeat_age_s": e["heartbeat_age_s"],
    }


def build_snapshot(
    rows: WindowRows,
    limits: WindowLimits,
    depth_series: dict[str, Any],
    jaeger_ui: str | None,
) -> dict[str, Any]:
    """The JSON the browser renders (times in epoch ms of the database clock)."""
    parts = SnapshotParts(rows, limits, depth_series, jaeger_ui)
    return {**parts.head, "calls": [parts.call(c) for c in rows.calls]}
