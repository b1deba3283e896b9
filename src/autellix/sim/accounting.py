"""Program accounting in the simulator: the service a call is issued with, what a finished call
adds to its program (`autellix.policy.priority`: the same `ProgramService` the live scheduler
reads from the program table), and the run's outcomes.
"""

from __future__ import annotations

from autellix.policy.priority import PriorityKind, atlas_exact_base
from autellix.sim.results import ProgramOutcome, SimRun
from autellix.sim.state import DONE, SimCall, SimEngine, SimState


class Accounting(SimState):
    """Service bases, finishes (children issued after their tool delay) and results."""

    _stop: object  # Admission._stop
    _gittins_finished: object  # GittinsLearning._gittins_finished

    def _service_base(self, c: SimCall) -> float:
        """The base a new call is issued with: `ProgramService.base_for` (PLAS: completed
        service plus the progress of the program's running calls; ATLAS: the critical path),
        `atlas_exact_base` over its parents for atlas-exact, 0 otherwise."""
        prog = c.prog
        if self.kind is PriorityKind.ATLAS_EXACT:
            return atlas_exact_base((p.base0, p.used) for p in c.parents)
        if self.kind is PriorityKind.PLAS or (
            self.gittins is not None and self.gittins.attained == "plas"
        ):
            running = [r.used + (r.eng.step - r.admit_step) for r in prog.running]
            return prog.service.base_for(PriorityKind.PLAS, running)
        return prog.service.base_for(self.kind)

    def _finish(self, e: SimEngine, c: SimCall, t: float) -> None:
        ctx = self._stop(e, c, t)
        c.state = DONE
        if self.records is not None:
            self.records[c.uid].finish_s = t
        prog = c.prog
        kv = e.kv
        if c.pinned:
            kv.unpin(prog.key, ctx if self.caching else 0)
            c.pinned = False
        elif self.caching:
            kv.put(prog.key, ctx)
        prog.service = prog.service.finish(c.base0, c.used)  # PLAS and ATLAS totals
        prog.wp += c.wc
        prog.tp += c.tc
        prog.remaining_out -= c.output
        prog.unfinished -= 1
        if prog.unfinished == 0:
            prog.finish = t
            if self.ghistory is not None:
                self._gittins_finished(prog)
        for ch in c.children:
            ch.nparents -= 1
            if ch.nparents == 0:
                d = ch.spec.delay_s
                if d > 0:
                    self._push(t + d, 0, ch, 0)
                else:
                    self._issue(ch, t)

    def _result(self, wall_s: float) -> SimRun:
        outcomes = []
        cached = prompt = 0
        last = self.first_arrival
        for prog in self.progs:
            spec = prog.spec
            outcomes.append(
                ProgramOutcome(
                    program_id=spec.program_id,
                    kind=spec.kind,
                    arrival_s=spec.arrival_s,
                    finish_s=prog.finish,
                    output_tokens=spec.output_tokens,
                    calls=len(spec.calls),
                    waiting_s=prog.wait_s,
                    executing_s=prog.exec_s,
                    preemptions=prog.npre,
                    cached_prompt_tokens=prog.cached,
                    prompt_tokens=prog.prompt,
                )
            )
            cached += prog.cached
            prompt += prog.prompt
            last = max(last, prog.finish)
        makespan = last - self.first_arrival
        util = [min(1.0, e.busy / makespan) if makespan > 0 else 0.0 for e in self.engines]
        return SimRun(
            policy=self.policy.name,
            programs=outcomes,
            makespan_s=makespan,
            preemptions=self.prio_preempt + self.kv_preempt,
            engine_utilization=util,
            cache_hit_rate=cached / prompt if prompt else 0.0,
            call_records=self.records,
            stats={
                "priority_preemptions": float(self.prio_preempt),
                "young_preemptions": float(self.young_preempt),
                "kv_preemptions": float(self.kv_preempt),
                "promotions": float(self.promotions),
                "guard_overrides": float(self.guard_overrides),
                "recomputed_tokens": float(self.recomputed),
                "decoded_tokens": float(self.decoded),
                "evicted_tokens": float(sum(e.kv.evicted for e in self.engines)),
                "iterations": float(sum(e.step for e in self.engines)),
                # time-weighted mean number of running calls per engine while busy
                "mean_batch": sum(e.batch_time for e in self.engines)
                / max(1e-12, sum(e.busy for e in self.engines)),
                "boundaries": float(self.n_boundaries),
                "events": float(self.n_events),
                "wall_s": wall_s,
            },
        )
