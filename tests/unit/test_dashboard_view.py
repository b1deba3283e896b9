"""The dashboard's derivations from rows (services/frontend/ui_view.py, ui_depth.py, ui_feed.py):
segments and marks of a call on its engine, dependencies and the critical path, wait vs run,
queue-depth series, trace links, and the feed's configuration. Rows are built the way Postgres
returns them (aware datetimes); the stack test checks the same on a real stack in a browser."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from autellix.runtime.telemetry import program_ids
from autellix.services.frontend.ui_depth import UNASSIGNED, DepthHistory
from autellix.services.frontend.ui_encode import SnapshotEncoder, apply_delta
from autellix.services.frontend.ui_feed import FeedConfig, Subscription, Update
from autellix.services.frontend.ui_view import (
    SnapshotParts,
    build_snapshot,
    call_segments,
    critical_path,
    dependencies,
    trace_links,
    wait_run,
)
from autellix.store.ui_queries import WindowLimits, WindowRows

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def ms(s: float) -> float:
    return at(s).timestamp() * 1000


def call(cid: str, **kw: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": cid,
        "program_id": "p",
        "thread_id": "main",
        "client_call_id": None,
        "parent_ids": [],
        "status": "finished",
        "level": 0,
        "engine_id": "e1",
        "attempts": 1,
        "preemptions": 0,
        "accepted_at": at(0),
        "dispatched_at": at(0.1),
        "started_at": at(0.2),
        "finished_at": at(1.2),
        "prompt_tokens": 40,
        "completion_tokens": 10,
        "cached_tokens": 0,
        "service": 10.0,
        "queue_s": 0.2,
        "run_s": 1.0,
        "finish_reason": "length",
        "error_code": None,
        "aged": False,
    }
    row.update(kw)
    return row


def preempt(cid: str, s: float, other: str = "c-other") -> dict[str, Any]:
    return {
        "call_id": cid,
        "at": at(s),
        "kind": "preempt",
        "level": 1,
        "engine_id": "e1",
        "reason": "waiting at a full batch",
        "value": 60.0,
        "other_call_id": other,
    }


def test_an_uninterrupted_call_waits_then_runs_and_shows_its_cache_hit() -> None:
    segs, marks = call_segments(call("c1", cached_tokens=32), [], now=at(5))
    assert segs == [
        {"kind": "waiting", "start": ms(0.1), "end": ms(0.2)},
        {"kind": "running", "start": ms(0.2), "end": ms(1.2)},
    ]
    assert marks == [{"kind": "cache_hit", "at": ms(0.2), "cached_tokens": 32, "prompt_tokens": 40}]


def test_a_running_call_runs_until_now() -> None:
    segs, _ = call_segments(call("c1", status="running", finished_at=None), [], now=at(3))
    assert segs[-1] == {"kind": "running", "start": ms(0.2), "end": ms(3)}


def test_one_preemption_resume_time_follows_from_the_run_time() -> None:
    # ran 0.2 -> 0.6 (0.4 s), preempted, resumed, finished at 2.2; run_s 1.0 in all, so the
    # last segment ran 0.6 s: resumed at 1.6
    c = call("c1", preemptions=1, finished_at=at(2.2), run_s=1.0)
    segs, marks = call_segments(c, [preempt("c1", 0.6)], now=at(5))
    assert [(s["kind"], s["start"], s["end"]) for s in segs] == [
        ("waiting", ms(0.1), ms(0.2)),
        ("running", ms(0.2), ms(0.6)),
        ("preempted", ms(0.6), pytest.approx(ms(1.6))),
        ("running", pytest.approx(ms(1.6)), ms(2.2)),
    ]
    kinds = [(m["kind"], m.get("other_call_id")) for m in marks]
    assert kinds == [("preempt", "c-other"), ("resume", None)]
    assert marks[1]["at"] == pytest.approx(ms(1.6)) and marks[1]["derived"]


def test_more_than_one_preemption_is_drawn_without_invented_boundaries() -> None:
    c = call("c1", preemptions=2, finished_at=at(3.0), run_s=1.5)
    segs, marks = call_segments(c, [preempt("c1", 0.6), preempt("c1", 1.5)], now=at(5))
    assert [s["kind"] for s in segs] == ["waiting", "running", "interrupted"]
    assert segs[-1] == {"kind": "interrupted", "start": ms(0.6), "end": ms(3.0)}
    assert [m["kind"] for m in marks] == ["preempt", "preempt"]


def test_a_preempted_call_still_running_has_no_derived_resume() -> None:
    c = call("c1", status="running", preemptions=1, finished_at=None, run_s=0.4)
    segs, marks = call_segments(c, [preempt("c1", 0.6)], now=at(2))
    assert [s["kind"] for s in segs] == ["waiting", "running", "interrupted"]
    assert "resume" not in [m["kind"] for m in marks]


def test_a_queued_call_is_not_on_any_engine_yet() -> None:
    c = call(
        "c1", status="queued", engine_id=None, dispatched_at=None, started_at=None, finished_at=None
    )
    assert call_segments(c, [], now=at(2)) == ([], [])


def fan_out_and_join() -> list[dict[str, Any]]:
    """root; two children in their own threads (parents: root); a join in main (parents: both)."""
    return [
        call("c-root", accepted_at=at(0), finished_at=at(1)),
        call("c-a", thread_id="a", parent_ids=["c-root"], accepted_at=at(1.1), finished_at=at(2)),
        call("c-b", thread_id="b", parent_ids=["root-key"], accepted_at=at(1.1), finished_at=at(3)),
        call("c-join", parent_ids=["c-a", "c-b"], accepted_at=at(3.5), finished_at=at(4)),
    ]


def test_dependencies_are_parents_by_id_or_client_key_plus_the_threads_previous_call() -> None:
    calls = fan_out_and_join()
    calls[0]["client_call_id"] = "root-key"
    deps = dependencies(calls)
    assert deps["c-root"] == []
    assert deps["c-a"] == [("c-root", "parent")]
    assert deps["c-b"] == [("c-root", "parent")]  # named by its client_call_id
    assert deps["c-join"] == [("c-a", "parent"), ("c-b", "parent"), ("c-root", "thread")]


def test_the_critical_path_goes_through_the_dependency_that_ended_last() -> None:
    calls = fan_out_and_join()
    calls[0]["client_call_id"] = "root-key"
    assert critical_path(calls, now=at(9)) == ["c-root", "c-b", "c-join"]
    calls[1]["finished_at"] = at(3.2)  # now a is the slower child
    assert critical_path(calls, now=at(9)) == ["c-root", "c-a", "c-join"]


def test_a_dependency_that_ended_after_the_call_arrived_did_not_hold_it_up() -> None:
    calls = [
        call("c-1", accepted_at=at(0), finished_at=at(5)),
        call("c-2", accepted_at=at(1), finished_at=at(6)),  # same thread, but overlapping
    ]
    assert critical_path(calls, now=at(9)) == ["c-2"]
    assert critical_path([], now=at(9)) == []


def test_wait_and_run_add_up_to_the_calls_life() -> None:
    assert wait_run(call("c1"), now=at(9)) == (pytest.approx(0.2), 1.0)
    running = call("c1", status="running", finished_at=None, run_s=None)
    assert wait_run(running, now=at(2.2)) == (pytest.approx(0.2), pytest.approx(2.0))


def test_trace_links_point_at_the_programs_derived_trace_and_a_search_by_attribute() -> None:
    assert trace_links(None, "p") is None
    links = trace_links("http://jaeger:16686/", "prog-1")
    assert links["trace"] == f"http://jaeger:16686/trace/{program_ids('prog-1')[0]:032x}"
    q = parse_qs(urlparse(links["search"]).query)
    assert q["service"] == ["autellix-frontend"]
    assert json.loads(q["tags"][0]) == {"autellix.program_id": "prog-1"}
    q = parse_qs(urlparse(trace_links("http://j", "prog-1", "c-9")["search"]).query)
    assert q["service"] == ["autellix-engine"]
    assert json.loads(q["tags"][0]) == {"autellix.call_id": "c-9"}


def test_depth_history_keeps_series_per_engine_level_and_state() -> None:
    h = DepthHistory(keep_s=10)
    h.add(
        1000,
        [
            {"engine_id": "e1", "level": 0, "status": "running", "n": 1},
            {"engine_id": "e1", "level": 1, "status": "preempted", "n": 2},
            {"engine_id": "e1", "level": 1, "status": "dispatched", "n": 1},
            {"engine_id": "e9", "level": 0, "status": "queued", "n": 3},
        ],
    )
    h.add(2000, [{"engine_id": "e1", "level": 0, "status": "running", "n": 1}])
    s = h.series(["e1", "e2"])
    assert s["e1"] == {"t": [1000, 2000], "running": {"0": [1, 1]}, "waiting": {"1": [3, 0]}}
    assert s["e2"] == {"t": [1000, 2000], "running": {}, "waiting": {}}
    assert s[UNASSIGNED]["waiting"] == {"0": [3, 0]}  # not dispatched yet: at the schedulers
    h.add(12_500, [])  # older than keep_s falls out
    assert h.series(["e1"])["e1"] == {"t": [12_500], "running": {}, "waiting": {}}


def test_build_snapshot_is_json_and_flags_the_critical_path() -> None:
    calls = fan_out_and_join()
    calls[0]["client_call_id"] = "root-key"
    program = {
        "id": "p",
        "status": "open",
        "created_at": at(0),
        "closed_at": None,
        "last_call_at": at(3.5),
        "last_finish_at": at(4),
        "service": 30.0,
        "total_service": 40.0,
        "attained": 40.0,
        "waiting_s": 1.0,
        "run_s": 4.0,
        "calls_total": 4,
        "calls_finished": 4,
        "prompt_tokens": 160,
        "completion_tokens": 40,
        "engine_affinity": "e1",
        "meta": {"tenant": "acme"},
    }
    rows = WindowRows(now=at(10), calls=calls, programs=[program])
    snap = json.loads(json.dumps(build_snapshot(rows, WindowLimits(), {}, None)))
    assert snap["critical_paths"] == {"p": ["c-root", "c-b", "c-join"]}
    assert [c["id"] for c in snap["calls"]] == ["c-root", "c-a", "c-b", "c-join"]
    (p,) = snap["programs"]
    assert p["latency_s"] == pytest.approx(10.0)  # open: so far
    assert p["tenant"] == "acme" and p["class"] is None and p["engine"] == "e1"
    assert p["links"] is None


def test_the_encoder_reuses_finished_calls_and_says_the_same_as_build_snapshot() -> None:
    calls = fan_out_and_join()
    calls[3].update(status="running", finished_at=None, run_s=None)
    rows = WindowRows(now=at(10), calls=calls)
    enc = SnapshotEncoder()
    one = enc.encode(SnapshotParts(rows, WindowLimits(), {}, None), {"feed": {"seq": 1}}, seq=1)
    first = json.loads(one.full())
    assert first == {**build_snapshot(rows, WindowLimits(), {}, None), "feed": {"seq": 1}}
    assert enc.cached == 3  # the finished ones; the running call is derived every time
    calls[0]["service"] = -1.0  # a finished call never changes: the cached text is used
    later = WindowRows(now=at(11), calls=calls[:1] + calls[2:])  # c-a left the window
    two = enc.encode(SnapshotParts(later, WindowLimits(), {}, None), {"feed": {"seq": 2}}, seq=2)
    second = json.loads(two.full())
    assert second["calls"][0]["service"] == 10.0
    assert second["calls"][-1]["run_s"] == pytest.approx(11.0 - 0.2)  # running: recomputed
    assert enc.cached == 2
    # the delta from the first snapshot: only the calls whose JSON changed travel, and
    # applied to the first snapshot it gives the second exactly
    delta = json.loads(two.delta(one))
    assert delta["base"] == 1 and "calls" not in delta
    assert delta["ids"] == [c["id"] for c in second["calls"]]
    assert "c-root" not in [c["id"] for c in delta["upsert"]]  # finished: the browser has it
    assert "c-join" in [c["id"] for c in delta["upsert"]]  # running: changed
    assert apply_delta(first, delta) == second
    assert len(two.delta(one)) < len(two.full())
    with pytest.raises(ValueError, match="delta from snapshot 1"):
        apply_delta(second, delta)


def test_feed_config_from_env_and_its_refusals() -> None:
    assert FeedConfig.from_env({}) == FeedConfig()
    c = FeedConfig.from_env(
        {
            "AUTELLIX_UI_POLL_S": "0.5",
            "AUTELLIX_UI_WINDOW_S": "60",
            "AUTELLIX_UI_MAX_CALLS": "50",
            "AUTELLIX_JAEGER_UI_URL": " http://j:16686 ",
        }
    )
    assert c.poll_s == 0.5 and c.limits.window_s == 60 and c.limits.max_calls == 50
    assert c.jaeger_ui == "http://j:16686"
    with pytest.raises(ValueError, match="AUTELLIX_UI_POLL_S"):
        FeedConfig.from_env({"AUTELLIX_UI_POLL_S": "fast"})
    with pytest.raises(ValueError, match="below"):
        FeedConfig.from_env({"AUTELLIX_UI_POLL_S": "0.01"})


def test_a_subscription_holds_only_the_newest_snapshot_and_sends_deltas_in_sequence() -> None:
    """The first event is a whole snapshot; then a delta whenever the browser has the snapshot
    it was computed from; one dropped (a slow browser) makes the next a whole snapshot again."""

    def update(seq: int) -> Update:
        return Update(seq=seq, base=seq - 1, full=f"full{seq}", delta=f"delta{seq}")

    async def main() -> list[tuple[str, str] | None]:
        sub = Subscription()
        sub.offer(update(1))
        sub.offer(update(2))  # the browser never read 1
        got = [await sub.next(0.1), await sub.next(0.05)]
        sub.offer(update(3))
        got.append(await sub.next(0.1))
        sub.offer(update(4))
        sub.offer(update(5))  # 4 dropped
        got.append(await sub.next(0.1))
        sub.offer(Update(seq=-1, base=None, full="error", delta=None))  # as the feed sends one
        got.append(await sub.next(0.1))
        sub.offer(update(7))  # after an error: whole again
        got.append(await sub.next(0.1))
        return got

    assert asyncio.run(main()) == [
        ("snapshot", "full2"),
        None,
        ("delta", "delta3"),
        ("snapshot", "full5"),
        ("snapshot", "error"),
        ("snapshot", "full7"),
    ]
