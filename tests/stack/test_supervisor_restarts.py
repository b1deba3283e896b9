"""The restart machinery on real processes: backoff that grows to its cap, a crash loop that is
reported (and still retried), a stable run that resets the count, and `hold` that stops it."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from autellix.local.backoff import Backoff, BackoffPolicy
from autellix.local.restart_units import ChildUnit
from autellix.local.restarts import Restarter, RestartEvent
from autellix.local.supervisor import ProcessGroup, ServiceSpec


def _wait(what: str, check: object, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"not within {timeout_s}s: {what}"
        time.sleep(0.05)


def test_backoff_doubles_to_its_cap_and_resets_after_a_stable_run() -> None:
    backoff = Backoff(BackoffPolicy(initial_s=0.5, factor=2, max_s=3, stable_after_s=60,
                                    crash_loop_after=4))  # fmt: skip
    delays = [backoff.after_crash(uptime_s=1.0) for _ in range(5)]
    assert [d.seconds for d in delays] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert [d.crash_loop for d in delays] == [False, False, False, True, True]
    fresh = backoff.after_crash(uptime_s=61.0)  # it ran long enough: the fault was transient
    assert (fresh.seconds, fresh.attempt, fresh.crash_loop) == (0.5, 1, False)
    with pytest.raises(ValueError):
        BackoffPolicy(initial_s=2, max_s=1)


def test_a_crashing_child_is_restarted_with_growing_delays_and_a_crash_loop_is_reported(
    tmp_path: Path,
) -> None:
    events: list[RestartEvent] = []
    policy = BackoffPolicy(initial_s=0.05, factor=2, max_s=0.2, crash_loop_after=3)
    crash = [sys.executable, "-c", "import sys, time; time.sleep(0.1); sys.exit(3)"]
    with ProcessGroup(echo=False) as group:
        group.start(ServiceSpec("crasher", crash))
        restarter = Restarter(policy, log_path=tmp_path / "supervisor.log",
                              listeners=[events.append])  # fmt: skip
        restarter.watch(ChildUnit(group, "crasher"))
        restarter.start()
        try:
            _wait("five restarts", lambda: sum(e.event == "restarted" for e in events) >= 5)
        finally:
            restarter.hold()
        exits = [e for e in events if e.event == "exited"]
        assert [e.delay_s for e in exits[:5]] == [0.05, 0.1, 0.2, 0.2, 0.2]
        assert [e.crash_loop for e in exits[:5]] == [False, False, True, True, True]
        assert all(e.exit == "code 3" and e.returncode == 3 for e in exits)
        assert "restart #3 in 0.2s (crash loop)" in exits[2].describe()
        # held: a crash now is not brought back
        count = len(events)
        time.sleep(0.6)
        assert len(events) <= count + 1
        assert not group["crasher"].running
        restarter.close()
    rows = [json.loads(line) for line in (tmp_path / "supervisor.log").read_text().splitlines()]
    assert rows[0]["event"] == "exited" and rows[0]["service"] == "crasher"
    assert rows[0]["exit"] == "code 3" and rows[0]["delay_s"] == 0.05
    assert "restart #1" in rows[0]["msg"]


def test_a_stop_the_group_asked_for_is_not_a_crash() -> None:
    events: list[RestartEvent] = []
    with ProcessGroup(echo=False) as group:
        group.start(ServiceSpec("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"]))
        restarter = Restarter(BackoffPolicy(initial_s=0.05), listeners=[events.append]).start()
        restarter.watch(ChildUnit(group, "sleeper"))
        group.stop("sleeper", timeout=5.0)
        time.sleep(0.5)
        restarter.close()
    assert events == []
