"""Which calls run: a Dispatch enters the level queues, and calls are admitted to the backend.

Admission (and the choice of whom to preempt) is the policy core's `plan_batch`, the rule the
simulator uses: walk the waiting calls in rank order `(level, tiebreak, seq)`, admit while a
batch slot is free, stop at the first that does not fit; a waiting call may preempt the
lowest-ranked running call of a *strictly* lower level (ties keep the running call) that has
decoded at least the policy's `min_run_tokens` in its current run, at most
`max_inflight_preemptions` at a time (the "one per engine step" cap: a preemption is in flight
until the backend has released the slot). How a chosen victim is stopped and resumed is
`preempt.py`; what an admitted call then does is `segments.py`.
"""

from __future__ import annotations

import asyncio

from autellix.policy import Candidate, plan_batch
from autellix.services.engine.call import EngineCall
from autellix.services.engine.state import RunnerState
from autellix.wire.protocol import Dispatch


class Admission(RunnerState):
    """`offer` (a Dispatch in), `_admit` (plan the batch), `_start` (a segment's task)."""

    def offer(self, dispatch: Dispatch) -> bool:
        """Take a dispatched call into the local queues; False for a duplicate or stale one."""
        key = (dispatch.call_id, dispatch.attempt)
        if key in self._recent or self.closing:
            return False
        existing = self.calls.get(dispatch.call_id)
        if existing is not None:
            if existing.dispatch.attempt >= dispatch.attempt:
                return False
            self._lose(existing, "superseded by a newer dispatch")
        call = EngineCall(dispatch=dispatch, level=dispatch.level)
        self.calls[call.call_id] = call
        early = self._early.pop(call.call_id, None)
        if early is not None and early.level is not None and early.seq > call.control_seq:
            # a level change that overtook its Dispatch (older ones are in the Dispatch)
            call.level, call.control_seq = early.level, early.seq
            if early.tiebreak is not None:
                call.tiebreak = early.tiebreak
        self.queues.push(call)
        self.otel.offered(call)
        self._admit()
        return True

    def _admit(self) -> None:
        """Apply `plan_batch` to the running calls and the head of the waiting queues."""
        if self.closing or not self.queues:
            return
        max_batch = self.backend.max_batch
        budget = self.cfg.max_inflight_preemptions - self._preempting
        preemptive = self.cfg.preemption and budget > 0
        free = max_batch - len(self.running)
        if free <= 0 and not preemptive:
            return
        best = self.queues.best_level()
        if free <= 0 and (
            best is None or not any(c.level > best for c in self.running if c.stop_reason is None)
        ):
            return  # full, and nobody waiting outranks a running call's level: nothing to do
        # only the first `free + budget + 1` waiting calls can be reached by the walk
        waiting = self.queues.head(max(0, free) + max(0, budget) + 1)
        candidates = [
            Candidate(
                call_id=c,
                key=c.key,
                running=True,
                protected=(
                    c.state != "running"
                    or c.stop_reason is not None
                    or c.run_tokens < c.dispatch.min_run_tokens
                ),
            )
            for c in self.running
        ]
        candidates += [Candidate(call_id=c, key=c.key, running=False) for c in waiting]
        plan = plan_batch(
            candidates,
            max_seqs=max_batch,
            max_preemptions=max(0, budget),
            preemptive=preemptive,
        )
        # each preemption admits one waiting call past the free slots, in plan order
        by_victim = dict(zip(plan.preempt, plan.admit[max(0, free) :], strict=False))
        for victim in plan.preempt:
            assert isinstance(victim, EngineCall)
            winner = by_victim.get(victim)
            assert winner is None or isinstance(winner, EngineCall)
            self.preempt(
                victim,
                f"level {winner.level if winner else '?'} waiting at a full batch"
                + (f" (call {winner.call_id})" if winner else ""),
                by=winner.call_id if winner else None,
            )
        for call in plan.admit:
            assert isinstance(call, EngineCall)
            if len(self.running) >= max_batch:
                break  # its slot frees when the preempted call has stopped (then we re-plan)
            self.queues.remove(call)
            self._start(call)

    def _start(self, call: EngineCall) -> None:
        call.state = "starting"
        self.running.add(call)
        call.task = asyncio.create_task(self._run(call), name=f"call-{call.call_id}")
