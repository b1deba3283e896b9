"""The discrete-event simulator (SIMULATED engines; see docs/scheduling.md for the semantics).

Model. Each engine runs continuous-batching iterations. At every iteration boundary it (1) retires
finished calls, issuing their children (after the tool delay), (2) applies queue changes (demotion
when a running call's priority value crosses a queue boundary, anti-starvation promotions),
(3) makes KV room (evict unpinned prefix-cache entries, else preempt the lowest-ranked running
call), and (4) admits waiting calls in rank order with priority preemption (`policy.batch` rule).
Every running call gains one token per iteration; an admitted call's first iteration also
prefills its uncached prompt. Iteration time comes from the `EngineProfile` latency model.

Speed. Nothing changes between two boundaries at which something *can* happen, so the engine
jumps over a whole *segment* of identical decode iterations at once, up to the earliest of: a call
finishing, a running call crossing a queue boundary, KV running out, a waiting call's promotion
deadline. The segment's duration has a closed form (context grows linearly), and when a call is
issued to the engine mid-segment the segment is cut at the first iteration boundary after it.
Per-call progress is derived from the engine's iteration counter, so a segment costs O(log n).

Where the parts are: this module is the event loop (issue, iteration boundaries); `queues.py`
ranks and anti-starvation, `admission.py` admission, preemption and KV, `segments.py` timing,
`accounting.py` program service and outcomes, `state.py` the records. The scheduling rules are
the functions of `autellix.policy` that the live scheduler and engine call.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Sequence

from autellix.policy.balance import BalancerConfig, BalancerKind, choose_engine, skewed
from autellix.policy.batch import PreemptionMode
from autellix.policy.fair_share import FairShareConfig, parse_weights
from autellix.policy.priority import PriorityKind
from autellix.policy.rank import call_tiebreak
from autellix.policy.registry import PolicyConfig
from autellix.sim.accounting import Accounting
from autellix.sim.admission import Admission
from autellix.sim.learning import GittinsLearning, assign_classes, new_history
from autellix.sim.profile import EngineProfile
from autellix.sim.queues import Queues
from autellix.sim.results import SimRun
from autellix.sim.segments import Segments
from autellix.sim.state import RUNNING, WAITING, SimCall, SimEngine, SimProgram
from autellix.sim.tenants import TenantShare, assign_tenants, parse_shares
from autellix.sim.trace import CallRecord
from autellix.workloads.types import ProgramSpec


class Simulator(Queues, Admission, Segments, Accounting, GittinsLearning, TenantShare):
    def __init__(
        self,
        programs: Sequence[ProgramSpec],
        policy: PolicyConfig,
        profile: EngineProfile,
        engines: int = 1,
        balancer: BalancerConfig | None = None,
        max_jump_steps: int | None = None,
        kv_watermark: float = 0.01,
        record_calls: bool = False,
        hints: float | None = None,
        classes: str = "kind",
        seed: int = 0,
        tenants: str | None = None,
        tenant_weights: str | None = None,
    ) -> None:
        if engines < 1:
            raise ValueError("engines must be >= 1")
        self.policy = policy
        self.profile = profile
        self.balancer = balancer or BalancerConfig()
        self.max_jump = max_jump_steps
        self.kind = policy.priority
        self.binned = policy.binned
        self.srpt = policy.priority is PriorityKind.SRPT
        self.preemptive = policy.preemptive
        self.caching = policy.prefix_caching
        self.starv = policy.starvation if self.binned and policy.starvation.enabled else None
        self.pw = policy.units.prefill_weight
        self.cap = max(0, policy.max_preemptions_per_step)
        self.min_run = max(0, policy.min_run_tokens) if policy.preemptive else 0
        self.block = max(1, profile.block_size)
        self.swap = policy.preemption.mode is PreemptionMode.SWAP
        self.swap_tok = profile.swap_s_per_token
        self.watermark = int(kv_watermark * profile.kv_capacity_tokens)
        self.budget = profile.max_num_batched_tokens or 0
        self.engines = [SimEngine(i, profile.kv_capacity_tokens) for i in range(engines)]
        self.events: list = []
        self.seq = 0
        self.rr = 0
        self.progs: list[SimProgram] = []
        self.n_events = 0
        self.n_boundaries = 0
        self.prio_preempt = 0
        self.young_preempt = 0  # priority preemptions of a run that decoded < 4 tokens
        self.kv_preempt = 0
        self.promotions = 0
        # long-prompt calls whose program affinity the locality guard ignored (load skewed)
        self.guard_overrides = 0
        self.recomputed = 0
        self.decoded = 0
        self.records: list[CallRecord] | None = [] if record_calls else None
        self._pending_prefill: dict[int, tuple[float, int]] = {}
        uid = 0
        for pi, spec in enumerate(programs):
            prog = SimProgram(spec, pi)
            self.progs.append(prog)
            calls = []
            for cs in spec.calls:
                c = SimCall(prog, cs, uid)
                uid += 1
                if self.records is not None:
                    self.records.append(CallRecord(spec.program_id, cs.index))
                calls.append(c)
            for c in calls:
                for p in c.spec.parents:
                    calls[p].children.append(c)
                    c.parents.append(calls[p])
                if c.nparents == 0:
                    self._push(spec.arrival_s + c.spec.delay_s, 0, c, 0)
        self.first_arrival = min((p.arrival_s for p in programs), default=0.0)
        # the gittins policy's learner (see sim/learning.py); hints also reach other policies'
        # records but only gittins reads them
        self.seed = seed
        self.hint_sigma = hints
        self.gittins = policy.gittins if self.kind is PriorityKind.GITTINS else None
        self.ghistory = new_history(self)
        self.gtables = self.ghistory.tables() if self.ghistory is not None else None
        if self.gittins is None:
            self.hint_sigma = None
        assign_classes(self.progs, classes, seed)
        # tenants by offered-load share; the fair share across them when weights are given
        assign_tenants(self.progs, parse_shares(tenants) if tenants else None, seed)
        self.fair = (
            None if tenant_weights is None else FairShareConfig(parse_weights(tenant_weights))
        )
        self.vtc: dict[str, float] = {}
        self.t_waiting: dict[str, int] = {}

    def _push(self, t: float, order: int, obj, ver: int) -> None:
        # Times are rounded to the nanosecond so that float noise (a jump's closed-form duration
        # vs. the sum of its steps) cannot reorder events that coincide in the model.
        self.seq += 1
        heapq.heappush(self.events, (round(t, 9), order, self.seq, obj, ver))

    def run(self) -> SimRun:
        wall = time.perf_counter()
        ev = self.events
        pop = heapq.heappop
        while ev:
            t, order, _, obj, ver = pop(ev)
            self.n_events += 1
            if order == 0:
                self._issue(obj, t)
            elif ver == obj.ver:
                self._boundary(obj, t)
        return self._result(time.perf_counter() - wall)

    def _issue(self, c: SimCall, t: float) -> None:
        prog = c.prog
        c.issue_t = t
        if self.records is not None:
            self.records[c.uid].issue_s = t
        c.base = c.base0 = self._service_base(c)
        value = self._gittins_issue(c) if self.gittins is not None else c.base
        c.tb = call_tiebreak(self.policy, value=value, issue_s=t, program_arrival_s=prog.arrival)
        engs = self.engines
        if len(engs) == 1:
            e = engs[0]
        else:
            loads = [len(x.running) + x.n_waiting for x in engs]
            ch = choose_engine(
                self.balancer, loads=loads, prompt_tokens=c.prompt, pin=prog.pin, counter=self.rr
            )
            self.rr += 1
            bal = self.balancer
            if (
                bal.kind is BalancerKind.LOCALITY
                and c.prompt > bal.short_prompt_tokens
                and skewed(loads, bal)
            ):
                self.guard_overrides += 1
            prog.pin = ch.pin
            e = engs[ch.engine]
        c.eng = e
        prog.prompt += c.prompt
        c.wait_since = t
        self._enqueue(e, c, t)
        self._notify(e, c, t)

    def _boundary(self, e: SimEngine, t: float) -> None:
        self.n_boundaries += 1
        k = e.seg_k
        if k:
            e.step += k
            grow = e.n_gen * k
            e.ctx_sum += grow
            e.kv.private += grow
            e.kv.evict()  # growth peaks here, before finishes free memory
            e.busy += e.seg_dur
            e.batch_time += len(e.running) * e.seg_dur
        e.new_calls = 0
        e.new_gen = 0
        e.ctx_new = 0
        e.prefill = 0
        e.prefill_attn = 0.0
        e.swap_s = 0.0
        e.cap_hit = False
        step = e.step
        sheap = e.sheap
        # 1-2. finishes and queue crossings due now
        while sheap and sheap[0][0] <= step:
            _, kind, _, run_id, c = heapq.heappop(sheap)
            if c.state != RUNNING or c.run_id != run_id:
                continue
            if kind == 0:
                self._finish(e, c, t)
            elif kind == 1:
                self._cross(e, c, step)
        # anti-starvation deadlines
        dl = e.deadlines
        while dl and dl[0][0] <= t + 1e-9:
            _, _, wid, c = heapq.heappop(dl)
            if c.state == WAITING and c.wait_id == wid:
                self._check_starvation(e, c, t)
        # 3. KV room for the next iteration
        self._make_kv_room(e, t)
        # 4. admissions / priority preemptions
        self._admit(e, t)
        self._make_kv_room(e, t)
        self._plan(e, t)
