"""Small asyncio helpers the services and the client share.

Why not `asyncio.wait_for(queue.get(), t)`: on Python 3.11, when a task is cancelled in the same
loop turn as the awaited item arrives, `wait_for` returns the item and drops the cancellation
(CPython gh-86296, fixed in 3.12 by building `wait_for` on `asyncio.timeout`). A client task that
the user cancels while tokens stream in then runs its call to the end instead of cancelling it.
`asyncio.timeout` does not swallow cancellations, and `Queue.get` keeps an item it was woken for
in the queue when cancelled, so nothing is lost either way.
"""

from __future__ import annotations

import asyncio
from typing import TypeVar

T = TypeVar("T")


async def get_within(queue: asyncio.Queue[T], timeout: float | None) -> T:  # noqa: ASYNC109
    """`queue.get()` limited to `timeout` seconds (None: no limit); raises TimeoutError.

    A cancellation of the caller always propagates, even if an item arrived at the same time.
    """
    async with asyncio.timeout(timeout):
        return await queue.get()
