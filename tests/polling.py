"""One way for tests to wait for something: poll a condition until it holds or time runs out.

Tests of a distributed system wait for effects they cannot await directly (a row in Postgres, a
message on the wire, a span at the collector). Every such wait goes through `poll_until`, so a
slow host changes how long a test takes, never what it asserts.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def poll_until(
    cond: Callable[[], Any | Awaitable[Any]],
    *,
    within_s: float = 15.0,
    every_s: float = 0.05,
    what: str = "condition",
    fail: bool = True,
) -> Any:
    """Call `cond` (plain or async) every `every_s` until it returns something truthy; return it.

    The condition is checked once more at the deadline, so a slow last poll is not a failure.
    On timeout: `AssertionError("timed out waiting for <what>")`, or, with `fail=False`, the
    last (falsy) value, for callers that assert on the state themselves.
    """
    deadline = time.monotonic() + within_s
    while True:
        value = cond()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            if fail:
                raise AssertionError(f"timed out waiting for {what}")
            return value
        await asyncio.sleep(every_s)
