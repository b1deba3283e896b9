"""`watch_loop`: a service logs when its event loop was blocked or starved, with how long."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from autellix.service_runtime import watch_loop


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
