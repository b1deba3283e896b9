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
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Sequence

from autellix.policy.balance import BalancerConfig, BalancerKind, choose_engine, skewed
from autellix.policy.batch import PreemptionMode
from autellix.policy.priority import PriorityKind
from autellix.policy.registry import PolicyConfig
from autellix.sim.cache import KVCache
from autellix.sim.profile import EngineProfile
from autellix.sim.results import ProgramOutcome, SimRun
from autellix.sim.trace import CallRecord
from autellix.workloads.types import ProgramSpec

WAITING, RUNNING, DONE, PENDING = 0, 1, 2, 3
_INF = math.inf


class _Prog:
    __slots__ = (
        "arrival",
        "cached",
        "completed",
        "critical",
        "exec_s",
        "finish",
        "key",
        "npre",
        "pin",
        "prompt",
        "remaining_out",
        "running",
        "spec",
        "tp",
        "unfinished",
        "wait_s",
        "wp",
    )

    def __init__(self, spec: ProgramSpec, key: int) -> None:
        self.spec = spec
        self.key = key  # prefix-cache key of the program's context
        self.arrival = spec.arrival_s
        self.completed = 0.0  # PLAS: service of finished calls
        self.critical = 0.0  # ATLAS scalar
        self.wp = 0.0  # starvation W_p
        self.tp = 0.0  # starvation T_p
        self.running: set[_Call] = set()
        self.unfinished = len(spec.calls)
        self.remaining_out = spec.output_tokens
        self.pin: int | None = None
        self.finish = spec.arrival_s
        self.wait_s = 0.0
        self.exec_s = 0.0
        self.npre = 0
        self.cached = 0
        self.prompt = 0


class _Call:
    __slots__ = (
        "admit_step",
        "aged",
        "base",
        "base0",
        "children",
        "ckey",
        "eng",
        "gen",
        "issue_t",
        "lvl",
        "nparents",
        "output",
        "parents",
        "pinned",
        "prefix",
        "prog",
        "prompt",
        "reuse",
        "run_id",
        "run_since",
        "spec",
        "state",
        "tb",
        "tc",
        "uid",
        "used",
        "v0",
        "ver",
        "wait_id",
        "wait_since",
        "wc",
    )

    def __init__(self, prog: _Prog, spec, uid: int) -> None:
        self.prog = prog
        self.spec = spec
        self.uid = uid
        self.ckey = -(uid + 1)  # prefix-cache key of this call's own tokens when preempted
        self.prompt = spec.prompt_tokens
        self.output = spec.output_tokens
        self.prefix = min(spec.prefix_tokens, spec.prompt_tokens)
        self.children: list[_Call] = []
        self.parents: list[_Call] = []
        self.nparents = len(spec.parents)
        self.state = PENDING
        self.eng: _Engine | None = None
        self.gen = 0  # tokens decoded (as of admission / preemption / finish)
        self.used = 0.0  # attained service units (as of admission / preemption / finish)
        self.base = 0.0  # rank base (changed by promotion)
        self.base0 = 0.0  # base at issue (ATLAS accounting)
        self.lvl: float = 0  # rank: queue level, or SRPT remaining work
        self.tb = 0.0  # tiebreak inside a level (issue time; program arrival once aged)
        self.ver = 0
        self.run_id = 0
        self.wait_id = 0
        self.issue_t = 0.0
        self.wait_since = 0.0
        self.run_since = 0.0
        self.wc = 0.0
        self.tc = 0.0
        self.aged = False
        self.pinned = False
        self.reuse = 0  # prefix tokens reused from the program entry in the current run
        self.admit_step = 0
        self.v0 = 0.0  # rank at engine step s is v0 + s (binned) or v0 - s (srpt)


class _Engine:
    __slots__ = (
        "batch_time",
        "busy",
        "cap_hit",
        "ctx_new",
        "ctx_sum",
        "deadlines",
        "idle",
        "idx",
        "kv",
        "n_gen",
        "n_waiting",
        "new_calls",
        "new_gen",
        "prefill",
        "prefill_attn",
        "rheap",
        "running",
        "seg_a",
        "seg_c",
        "seg_ctx0",
        "seg_dur",
        "seg_k",
        "seg_n",
        "seg_t0",
        "sheap",
        "step",
        "swap_s",
        "ver",
        "wheap",
    )

    def __init__(self, idx: int, kv_capacity: int) -> None:
        self.idx = idx
        self.kv = KVCache(kv_capacity)
        self.step = 0
        self.running: set[_Call] = set()
        self.n_gen = 0  # running calls that decode tokens
        self.ctx_sum = 0  # total context tokens of decoding calls
        self.n_waiting = 0
        self.wheap: list = []  # (lvl, tb, uid, ver, call)
        self.rheap: list = []  # (-lvl, -tb, -uid, ver, call): worst running first
        self.sheap: list = []  # (step, kind, uid, run_id, call): finish=0 / cross=1 / unprotect=2
        self.deadlines: list = []  # (time, uid, wait_id, call)
        self.idle = True
        self.ver = 0
        self.busy = 0.0
        self.batch_time = 0.0  # integral of the running batch size over time
        self.cap_hit = False
        self.seg_t0 = 0.0
        self.seg_k = 0
        self.seg_a = 0.0
        self.seg_c = 0.0
        self.seg_ctx0 = 0.0
        self.seg_n = 0
        self.seg_dur = 0.0
        # work of the coming prefill iteration
        self.new_calls = 0
        self.new_gen = 0
        self.ctx_new = 0
        self.prefill = 0
        self.prefill_attn = 0.0
        self.swap_s = 0.0


class Simulator:
    """One simulation run; `run()` returns a `SimRun`. Use `autellix.sim.simulate`."""

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
        self.mlfq = policy.mlfq
        self.starv = policy.starvation if self.binned and policy.starvation.enabled else None
        self.pw = policy.units.prefill_weight
        self.by_program = policy.within_level == "program"
        self.by_service = policy.within_level == "service" and policy.binned
        self.cap = max(0, policy.max_preemptions_per_step)
        self.min_run = max(0, policy.min_run_tokens) if policy.preemptive else 0
        self.block = max(1, profile.block_size)
        self.swap = policy.preemption.mode is PreemptionMode.SWAP
        self.swap_tok = profile.swap_s_per_token
        self.watermark = int(kv_watermark * profile.kv_capacity_tokens)
        self.budget = profile.max_num_batched_tokens or 0
        self.engines = [_Engine(i, profile.kv_capacity_tokens) for i in range(engines)]
        self.events: list = []
        self.seq = 0
        self.rr = 0
        self.progs: list[_Prog] = []
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
            prog = _Prog(spec, pi)
            self.progs.append(prog)
            calls = []
            for cs in spec.calls:
                c = _Call(prog, cs, uid)
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

    # ------------------------------------------------------------------ events
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

    # ------------------------------------------------------------------ ranks
    def _rank_now(self, c: _Call, step: int) -> float:
        """Current rank of a running call (level or SRPT remaining)."""
        if self.srpt:
            return c.v0 - step
        if not self.binned or c.aged:
            return 0
        return self.mlfq.level_for(c.v0 + step)

    def _wait_rank(self, c: _Call) -> float:
        if self.srpt:
            return c.prog.remaining_out - c.gen
        if not self.binned or c.aged:
            return 0
        return self.mlfq.level_for(c.base + c.used)

    # ------------------------------------------------------------------ issue / balance
    def _issue(self, c: _Call, t: float) -> None:
        prog = c.prog
        c.issue_t = t
        if self.records is not None:
            self.records[c.uid].issue_s = t
        c.tb = prog.arrival if self.by_program else t
        k = self.kind
        if k is PriorityKind.PLAS:
            base = prog.completed
            for r in prog.running:
                base += r.used + (r.eng.step - r.admit_step)
            c.base = base
        elif k is PriorityKind.ATLAS:
            c.base = prog.critical
        elif k is PriorityKind.ATLAS_EXACT:
            c.base = max((p.base0 + p.used for p in c.parents), default=0.0)
        c.base0 = c.base
        if self.by_service:
            c.tb = c.base  # exact least-attained order inside a queue
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

    def _enqueue(self, e: _Engine, c: _Call, t: float) -> None:
        """Put a call (new or preempted) in its engine's waiting queue."""
        c.state = WAITING
        c.wait_id += 1
        c.ver += 1
        e.n_waiting += 1
        if self.starv is not None and not c.aged:
            self._starvation(e, c, t, c.wc)
        c.lvl = self._wait_rank(c)
        heapq.heappush(e.wheap, (c.lvl, c.tb, c.uid, c.ver, c))

    def _promote(self, c: _Call, t: float) -> None:
        """Paper's rule: to Q1 with a fresh quantum; reset (discard) the call's W_c and T_c."""
        acc = t - c.wait_since
        c.prog.wait_s += acc
        c.wait_since = t
        c.wc = 0.0
        c.tc = 0.0
        c.base = -c.used
        self.promotions += 1

    def _age(self, c: _Call) -> None:
        """Beyond-paper: sticky top queue, FCFS by program arrival."""
        c.aged = True
        c.tb = c.prog.arrival
        self.promotions += 1

    def _notify(self, e: _Engine, c: _Call, t: float) -> None:
        """A call was queued at `e` at time t: make sure the engine looks at it soon enough."""
        if e.idle:
            e.idle = False
            e.ver += 1
            e.seg_k = 0
            e.seg_dur = 0.0
            e.seg_t0 = t
            self._push(t, 1, e, e.ver)
            return
        if e.seg_k <= 1:
            return
        # Cut the segment at the first boundary after t, unless this call cannot change the
        # batch there; and in any case no later than its promotion deadline.
        cut = t
        if len(e.running) >= self.profile.max_num_seqs:
            w = self._worst_running(e) if self.preemptive else None
            if w is None or not (w.lvl > c.lvl):
                cut = _INF
                dl = e.deadlines
                while dl:
                    d, _, wid, dc = dl[0]
                    if dc.state != WAITING or dc.wait_id != wid:
                        heapq.heappop(dl)
                        continue
                    cut = d
                    break
                if cut >= e.seg_t0 + e.seg_dur:
                    return
        m = self._steps_by(e, cut)
        if m < e.seg_k:
            e.seg_k = m
            e.seg_dur = self._seg_time(e, m)
            e.ver += 1
            self._push(e.seg_t0 + e.seg_dur, 1, e, e.ver)

    # ------------------------------------------------------------------ segments
    def _seg_time(self, e: _Engine, m: int) -> float:
        return m * e.seg_a + e.seg_c * (m * e.seg_ctx0 + e.seg_n * m * (m - 1) * 0.5)

    def _steps_by(self, e: _Engine, t: float) -> int:
        """Fewest iterations (>= 1) of the current decode segment that end at or after t."""
        d = t - e.seg_t0
        if d <= 0:
            return 1
        a2 = e.seg_c * e.seg_n * 0.5
        b = e.seg_a + e.seg_c * e.seg_ctx0 - a2
        if a2 > 0:
            m = math.ceil((-b + math.sqrt(b * b + 4 * a2 * d)) / (2 * a2))
        elif b > 0:
            m = math.ceil(d / b)
        else:
            return 1
        m = max(1, m)
        # an iteration ending within a nanosecond of t ends "at" t: the event queue rounds
        # times to the nanosecond (`_push`), and a step-by-step run sees that boundary at t
        d -= 1e-9
        while m > 1 and self._seg_time(e, m - 1) >= d:
            m -= 1
        while self._seg_time(e, m) < d:
            m += 1
        return m

    # ------------------------------------------------------------------ boundary
    def _boundary(self, e: _Engine, t: float) -> None:
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

    def _plan(self, e: _Engine, t: float) -> None:
        """Start the next segment (one prefill iteration, or a jump of decode iterations)."""
        if not e.running:
            e.idle = True
            e.seg_k = 0
            return
        p = self.profile
        n_old = e.n_gen - e.new_gen
        ctx_old = e.ctx_sum - e.ctx_new
        e.seg_t0 = t
        e.seg_n = e.n_gen
        e.seg_c = p.decode_per_ctx_token_s
        if e.new_calls or e.prefill or e.swap_s:
            e.seg_k = 1
            e.seg_dur = (
                p.base_s
                + p.decode_per_seq_s * n_old
                + p.decode_per_ctx_token_s * ctx_old
                + p.prefill_per_token_s * e.prefill
                + p.prefill_attn_s * e.prefill_attn
                + e.swap_s
            )
            # keep segment params consistent for _steps_by (unused when k == 1)
            e.seg_a = e.seg_dur
            e.seg_c = 0.0
            e.seg_ctx0 = 0.0
        else:
            e.seg_a = p.base_s + p.decode_per_seq_s * e.n_gen
            e.seg_ctx0 = e.ctx_sum
            k = 1 << 40
            sh = e.sheap
            while sh:
                s, _, _, run_id, c = sh[0]
                if c.state != RUNNING or c.run_id != run_id:
                    heapq.heappop(sh)
                    continue
                k = s - e.step
                break
            if e.n_gen:
                kv = e.kv
                room = (kv.capacity - kv.held()) // e.n_gen
                k = min(k, max(1, room))
                if e.n_waiting and kv.lru_sum and len(e.running) < self.profile.max_num_seqs:
                    # A KV-blocked waiting call may fit once growth evicts its cached prefix
                    # (it then no longer has to hold it): stop at the next eviction.
                    free = kv.capacity - kv.held() - kv.lru_sum
                    k = min(k, max(1, free // e.n_gen + 1))
            if self.max_jump:
                k = min(k, self.max_jump)
            if e.cap_hit:
                k = 1
            k = max(1, k)
            e.seg_k = k
            e.seg_dur = self._seg_time(e, k)
            dl = e.deadlines
            while dl:
                d, _, wid, c = dl[0]
                if c.state != WAITING or c.wait_id != wid:
                    heapq.heappop(dl)
                    continue
                if t + e.seg_dur > d:
                    m = self._steps_by(e, d)
                    if m < k:
                        e.seg_k = m
                        e.seg_dur = self._seg_time(e, m)
                break
        e.ver += 1
        self._push(t + e.seg_dur, 1, e, e.ver)

    # ------------------------------------------------------------------ running set
    def _worst_running(self, e: _Engine) -> _Call | None:
        rh = e.rheap
        while rh:
            _, _, _, ver, c = rh[0]
            if c.state != RUNNING or c.ver != ver or c.eng is not e:
                heapq.heappop(rh)
                continue
            if self.srpt:
                lvl = c.v0 - e.step
                if lvl != c.lvl:
                    heapq.heappop(rh)
                    c.lvl = lvl
                    c.ver += 1
                    heapq.heappush(rh, (-lvl, -c.tb, -c.uid, c.ver, c))
                    continue
            return c
        return None

    def _best_waiting(self, e: _Engine) -> _Call | None:
        wh = e.wheap
        while wh:
            _, _, _, ver, c = wh[0]
            if c.state != WAITING or c.ver != ver:
                heapq.heappop(wh)
                continue
            return c
        return None

    def _cross(self, e: _Engine, c: _Call, step: int) -> None:
        lvl = self._rank_now(c, step)
        if lvl != c.lvl:
            c.lvl = lvl
            c.ver += 1
            heapq.heappush(e.rheap, (-lvl, -c.tb, -c.uid, c.ver, c))
        self._push_cross(e, c, step)

    def _push_cross(self, e: _Engine, c: _Call, step: int) -> None:
        if not self.binned or c.aged:
            return
        nxt = self.mlfq.upper(c.v0 + step)
        if nxt == _INF:
            return
        s = math.ceil(nxt - c.v0)
        finish = c.admit_step + max(1, c.output - c.gen)
        if s < finish:
            heapq.heappush(e.sheap, (s, 1, c.uid, c.run_id, c))

    # ------------------------------------------------------------------ admission
    def _kv_need(self, e: _Engine, c: _Call) -> tuple[int, int, int, int]:
        """(prefix reused from the program entry, own tokens reusable, KV tokens to hold, tokens
        served from the cache: at most ctx - 1, rounded down to whole KV blocks).

        A preempted call's own tokens (entry `ckey`) continue its previous run's prefix at
        position `c.reuse`; they are usable only if the program entry still covers that prefix
        (vLLM chains block hashes: a lost block makes every later block unreachable). vLLM
        caches and matches full blocks only.
        """
        ctx = c.prompt + c.gen
        if self.swap and c.gen:
            return 0, ctx, ctx, ctx
        reuse = own = 0
        hold = 0
        if self.caching:
            kv = e.kv
            reuse = min(c.prefix, kv.lookup(c.prog.key))
            hold = kv.unpinned_tokens(c.prog.key) if reuse else 0
            if c.gen and reuse >= c.reuse:
                own = max(0, min(c.reuse + kv.lookup(c.ckey), ctx) - reuse)
        # vLLM computes at least the last token (it needs its logits), then rounds to blocks
        hit = max(0, min(reuse + own, ctx - 1))
        if self.block > 1:
            hit -= hit % self.block
        return reuse, own, hold + ctx - reuse, hit

    def _admit(self, e: _Engine, t: float) -> None:
        maxn = self.profile.max_num_seqs
        kv = e.kv
        cap_tokens = kv.capacity - self.watermark
        preempts = 0
        budget = self.budget
        while True:
            w = self._best_waiting(e)
            if w is None:
                return
            reuse, own, need, hit = self._kv_need(e, w)
            new_tok = w.prompt + w.gen - hit
            if budget and e.prefill and e.prefill + new_tok > budget:
                return  # prefill budget of this iteration spent
            # room for the call and for the next iteration's token of every running call
            fits = kv.held() + need + e.n_gen + (w.output > 0) <= cap_tokens
            if len(e.running) < maxn and (fits or not e.running):
                self._start(e, w, t, reuse, own, hit)
                continue
            if not self.preemptive:
                return
            r = self._victim(e, w.lvl)
            if preempts >= self.cap:
                # the cap, not the ranks, stops preemption: continue next iteration
                if r is not None:
                    e.cap_hit = True
                return
            if r is None:
                return
            if e.step - r.admit_step < 4:
                self.young_preempt += 1
            self._preempt(e, r, t)
            self.prio_preempt += 1
            preempts += 1

    def _victim(self, e: _Engine, lvl: float) -> _Call | None:
        """The running call a priority preemption takes for a waiting call of rank `lvl`: the
        lowest-ranked one in a strictly lower queue that has run `min_run_tokens` in its current
        run (younger runs are protected, so a call cannot ping-pong in and out of the batch)."""
        r = self._worst_running(e)
        if r is None or not (r.lvl > lvl):
            return None
        if not self.min_run or e.step - r.admit_step >= self.min_run:
            return r
        rh = e.rheap
        held = []
        found = None
        while True:
            held.append(heapq.heappop(rh))
            r = self._worst_running(e)
            if r is None or not (r.lvl > lvl):
                break
            if e.step - r.admit_step >= self.min_run:
                found = r
                break
        for x in held:
            heapq.heappush(rh, x)
        return found

    def _start(self, e: _Engine, c: _Call, t: float, reuse: int, own: int, hit: int) -> None:
        e.n_waiting -= 1
        prog = c.prog
        dt = t - c.wait_since
        c.wc += dt
        prog.wait_s += dt
        first = c.run_id == 0
        c.run_id += 1
        c.ver += 1
        c.state = RUNNING
        c.run_since = t
        kv = e.kv
        ctx = c.prompt + c.gen
        if self.swap and c.gen:
            new_tok = 0
            e.swap_s += self.swap_tok * ctx
            c.reuse = 0
            priv = ctx
        else:
            if reuse:
                kv.pin(prog.key)
                c.pinned = True
            if c.gen:
                kv.take(c.ckey)  # own tokens become private again (or are stale: dropped)
            c.reuse = reuse
            new_tok = ctx - hit
            priv = ctx - reuse
            if not first:
                self.recomputed += new_tok
        kv.private += priv
        kv.evict()
        if self.records is not None:
            self._pending_prefill[c.uid] = (t, new_tok)
        if first:
            prog.cached += hit
        e.prefill += new_tok
        e.prefill_attn += new_tok * ctx
        c.used += self.pw * new_tok
        c.admit_step = e.step
        if self.srpt:
            c.v0 = c.lvl + e.step
        else:
            c.v0 = c.base + c.used - e.step
            if self.binned and not c.aged:
                c.lvl = self.mlfq.level_for(c.base + c.used)
        e.running.add(c)
        prog.running.add(c)
        e.new_calls += 1
        if c.output > 0:
            e.n_gen += 1
            e.ctx_sum += ctx
            e.ctx_new += ctx
            e.new_gen += 1
        heapq.heappush(e.rheap, (-c.lvl, -c.tb, -c.uid, c.ver, c))
        steps = max(1, c.output - c.gen)
        heapq.heappush(e.sheap, (e.step + steps, 0, c.uid, c.run_id, c))
        if self.min_run and self.min_run < steps:
            # a boundary when the run's protection ends, so a waiting call can preempt it then
            heapq.heappush(e.sheap, (e.step + self.min_run, 2, c.uid, c.run_id, c))
        self._push_cross(e, c, e.step)

    def _stop(self, e: _Engine, c: _Call, t: float) -> int:
        """Take a running call off the engine; returns its context tokens."""
        steps = e.step - c.admit_step
        if c.output > 0:
            done = min(steps, c.output - c.gen)
            c.gen += done
            c.used += done
        else:
            done = 0
        self.decoded += done
        if self.records is not None:
            t0, pf = self._pending_prefill.pop(c.uid)
            self.records[c.uid].runs.append((e.idx, t0, t, done, pf))
        ctx = c.prompt + c.gen
        dt = t - c.run_since
        c.tc += dt
        c.prog.exec_s += dt
        e.running.discard(c)
        c.prog.running.discard(c)
        c.ver += 1
        if c.output > 0:
            e.n_gen -= 1
            e.ctx_sum -= ctx
        e.kv.private -= ctx - c.reuse
        return ctx

    def _preempt(self, e: _Engine, c: _Call, t: float) -> None:
        ctx = self._stop(e, c, t)
        c.prog.npre += 1
        kv = e.kv
        if self.swap:
            if c.pinned:
                kv.unpin(c.prog.key)
                c.pinned = False
            c.reuse = 0
            e.swap_s += self.swap_tok * ctx
        else:
            # vLLM frees a request's blocks tail first, so its own tokens become eviction
            # candidates before the program prefix it shares: store them first (older in LRU).
            if self.caching:
                kv.put(c.ckey, ctx - c.reuse)
            if c.pinned:
                kv.unpin(c.prog.key)
                c.pinned = False
        c.wait_since = t
        self._enqueue(e, c, t)

    def _finish(self, e: _Engine, c: _Call, t: float) -> None:
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
        prog.completed += c.used
        prog.critical = max(prog.critical, c.base0 + c.used)
        prog.wp += c.wc
        prog.tp += c.tc
        prog.remaining_out -= c.output
        prog.unfinished -= 1
        if prog.unfinished == 0:
            prog.finish = t
        for ch in c.children:
            ch.nparents -= 1
            if ch.nparents == 0:
                d = ch.spec.delay_s
                if d > 0:
                    self._push(t + d, 0, ch, 0)
                else:
                    self._issue(ch, t)

    def _make_kv_room(self, e: _Engine, t: float) -> None:
        """Ensure the next iteration's token growth fits; preempt lowest-ranked calls if not."""
        kv = e.kv
        kv.evict()
        while len(e.running) > 1 and kv.held() + e.n_gen > kv.capacity:
            r = self._worst_running(e)
            if r is None:
                break
            self._preempt(e, r, t)
            self.kv_preempt += 1
            kv.evict()

    def _starvation(self, e: _Engine, c: _Call, t: float, wc: float) -> bool:
        """Apply due promotions to a waiting call and schedule its next check; True if promoted.

        The deadline is `policy.starvation.promotion_time` restricted to the rules that can still
        change the call's rank (the paper's ratio rule only below Q1, the age rule until aged).
        """
        st = self.starv
        prog = c.prog
        if st.age_s is not None and t - prog.arrival >= st.age_s:
            self._age(c)
            return True
        promoted = False
        lvl = self._wait_rank(c)
        d = _INF
        if st.beta is not None and lvl > 0:
            d = t + st.beta * max(st.eps, prog.tp + c.tc) - (prog.wp + wc)
            if d <= t:
                self._promote(c, t)
                promoted = True
                d = _INF
        if st.age_s is not None:
            d = min(d, prog.arrival + st.age_s)
        if d < _INF:
            heapq.heappush(e.deadlines, (max(d, t), c.uid, c.wait_id, c))
        return promoted

    def _check_starvation(self, e: _Engine, c: _Call, t: float) -> None:
        if self._starvation(e, c, t, c.wc + (t - c.wait_since)):
            c.ver += 1
            c.lvl = self._wait_rank(c)
            heapq.heappush(e.wheap, (c.lvl, c.tb, c.uid, c.ver, c))

    # ------------------------------------------------------------------ results
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
