"""get_within: a cancellation that arrives together with an item is not swallowed (it is with
`asyncio.wait_for` on Python 3.11, which made a cancelled client call run to its end)."""

from __future__ import annotations

import asyncio

import pytest

from autellix.transport.aio import get_within


async def _cancel_as_item_arrives(getter) -> asyncio.Task:  # type: ignore[no-untyped-def]
    queue: asyncio.Queue[int] = asyncio.Queue()
    task = asyncio.create_task(getter(queue))
    await asyncio.sleep(0)  # the task now waits inside get()
    queue.put_nowait(1)  # wakes the getter ...
    task.cancel()  # ... and cancels it in the same loop turn
    with pytest.raises(asyncio.CancelledError):
        await task
    assert queue.qsize() == 1  # the item stays for the next reader
    return task


async def test_cancel_in_the_same_turn_as_an_item_propagates() -> None:
    await _cancel_as_item_arrives(lambda q: get_within(q, 5.0))
    await _cancel_as_item_arrives(lambda q: get_within(q, None))


async def test_times_out_and_returns_items() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    with pytest.raises(TimeoutError):
        await get_within(queue, 0.01)
    queue.put_nowait(7)
    assert await get_within(queue, 0.01) == 7
