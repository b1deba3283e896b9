"""SIGKILL one part of a supervised `Stack` and wait until its restarter has brought it back.

The parts are the ones `autellix up` runs: an engine, a scheduler replica, the frontend, the
embedded nats-server and the embedded Postgres. Nothing here restarts anything: the stack's own
`Restarter` does, as it would for a real crash, so what is measured is what a user gets.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass

from autellix.local.stack import Stack

__all__ = ["FAULTS", "Kill", "kill_and_wait", "part_pid"]

#: fault name -> the part of the stack it kills
FAULTS: dict[str, str] = {
    "engine": "engine-0",
    "scheduler": "scheduler-0",
    "frontend": "frontend",
    "nats": "nats",
    "postgres": "postgres",
}


@dataclass
class Kill:
    """One fault: when the part was killed, restarted and the whole stack ready again (all
    time.monotonic(); None when it did not happen within the wait)."""

    fault: str
    part: str
    pid: int
    killed_at: float
    restarted_at: float | None = None
    ready_at: float | None = None
    restart_delay_s: float | None = None  # the backoff the restarter chose


def part_pid(stack: Stack, part: str) -> int:
    """The pid of a part's current process."""
    if part == "nats":
        assert stack.nats is not None and stack.nats.pid is not None
        return stack.nats.pid
    if part == "postgres":
        assert stack.postgres is not None and stack.postgres.pid is not None
        return stack.postgres.pid
    assert stack.group is not None
    return stack.group[part].pid


async def kill_and_wait(stack: Stack, fault: str, wait_s: float = 60.0) -> Kill:
    """SIGKILL the part `fault` names; return once it is restarted and the stack is ready
    (every engine heartbeats, the frontend answers), or after `wait_s`."""
    assert stack.restarter is not None, "the stack must supervise (StackConfig.restart)"
    part = FAULTS[fault]
    seen = len(stack.restarter.events)
    pid = part_pid(stack, part)
    os.kill(pid, signal.SIGKILL)
    kill = Kill(fault, part, pid, time.monotonic())
    wall = time.time()  # restart events are stamped with the wall clock
    deadline = kill.killed_at + wait_s
    while time.monotonic() < deadline and kill.restarted_at is None:
        for event in stack.restarter.events[seen:]:
            if event.service != part:
                continue
            if event.event == "exited" and kill.restart_delay_s is None:
                kill.restart_delay_s = event.delay_s
            if event.event == "restarted":
                kill.restarted_at = kill.killed_at + max(0.0, event.at - wall)
        await asyncio.sleep(0.05)
    if kill.restarted_at is None:
        return kill
    try:
        await stack.wait_ready(max(1.0, deadline - time.monotonic()))
    except Exception:
        return kill
    kill.ready_at = time.monotonic()
    return kill
