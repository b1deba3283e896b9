"""`watch_loop`: a service logs when its event loop was blocked or starved, with how long."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from autellix.runtime.service import STALL_DEFAULT_S, STALL_ENV, stall_threshold, watch_loop


class _Log:
    def __init__(self) -> None:
        self.warnings: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.warnings.append((event, fields))


async def test_a_blocked_loop_is_logged_with_its_delay() -> None:
    log = _Log()
    watch = asyncio.create_task(watch_loop(log, threshold_s=0.1, tick_s=0.01))
    await asyncio.sleep(0.05)
    assert log.warnings == []  # an idle loop is on time
    time.sleep(0.3)  # noqa: ASYNC251 - a callback that blocks the loop, on purpose
    await asyncio.sleep(0.05)
    watch.cancel()
    ((event, fields),) = log.warnings
    assert event == "event loop stalled"
    assert 200 <= fields["late_ms"] < 1000


async def test_threshold_zero_turns_it_off() -> None:
    log = _Log()
    await asyncio.wait_for(watch_loop(log, threshold_s=0), 1)  # returns at once
    assert log.warnings == []


def test_the_threshold_comes_from_the_environment_and_a_bad_value_is_logged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    log = _Log()
    monkeypatch.delenv(STALL_ENV, raising=False)
    assert stall_threshold(log) == STALL_DEFAULT_S
    monkeypatch.setenv(STALL_ENV, "0.5")
    assert stall_threshold(log) == 0.5
    monkeypatch.setenv(STALL_ENV, "half a second")
    assert stall_threshold(log) == STALL_DEFAULT_S
    ((event, fields),) = log.warnings
    assert STALL_ENV in event and fields["value"] == "half a second"
