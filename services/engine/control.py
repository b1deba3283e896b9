"""The schedulers' `Control` messages to this engine: set a call's level, preempt it, cancel it.

The levels are the schedulers' decisions (`Dispatch.level`, then `set_level` for demotions and
promotions); the engine only orders and preempts by them. Each message is applied once
(per-call `seq`); a level change that arrives before its Dispatch is kept until it does.
"""

from __future__ import annotations

import asyncio

from autellix.services.engine.state import RunnerState
from autellix.wire.protocol import Control, ErrorCode


class ControlHandling(RunnerState):
    """`control`: apply one scheduler Control message."""

    def control(self, msg: Control) -> None:
        """Apply a scheduler's Control message; idempotent (repeats and stale seqs are no-ops).

        A level change for a call not here yet (its Dispatch is still on its way: a promotion
        of a just-dispatched call) is kept for a while and applied when the Dispatch arrives,
        else the engine would run it at the level the Dispatch carried."""
        call = self.calls.get(msg.call_id)
        if call is None:
            if msg.action == "set_level":
                prev = self._early.get(msg.call_id)
                if prev is None or msg.seq > prev.seq:
                    self._early[msg.call_id] = msg
                    while len(self._early) > 10_000:
                        self._early.popitem(last=False)
            return
        if msg.seq and msg.seq <= call.control_seq:
            return
        call.control_seq = max(call.control_seq, msg.seq)
        if msg.action == "set_level" and msg.level is not None:
            if call.state == "waiting":
                self.queues.set_level(call, msg.level, msg.tiebreak)
            else:
                call.level = msg.level
                if msg.tiebreak is not None:
                    call.tiebreak = msg.tiebreak
                if call.stop_reason == "preempt":
                    call.requeue_level = msg.level  # it re-enters the queues at the new level
        elif msg.action == "preempt":
            if call.state == "running":
                self.preempt(call, msg.reason or "scheduler preempt", msg.level)
            elif call.state == "waiting" and msg.level is not None:
                self.queues.set_level(call, msg.level, msg.tiebreak)
        elif msg.action == "cancel":
            if call.state == "waiting":
                self.queues.remove(call)
                call.state = "done"  # not admitted again; _fail below finishes the bookkeeping
                call.task = asyncio.create_task(
                    self._fail(call, ErrorCode.cancelled, msg.reason or "cancelled")
                )
            elif call.stop_reason is None:
                call.stop_reason, call.stop_detail = "cancel", msg.reason or "cancelled"
                if call.gen_task is not None:
                    call.gen_task.cancel()
        self._admit()
