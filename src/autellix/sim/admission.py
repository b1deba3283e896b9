"""Which calls a simulated engine runs: admission in rank order, priority preemption, KV room.

The rules are `autellix.policy.batch`'s (`can_admit`, `choose_victim`, `run_protected`: the
functions `plan_batch` is made of, which the live engine calls); this module applies them to the
engine's heaps and its KV cache (prefix reuse, eviction, recompute or swap on preemption).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator

from autellix.policy.batch import can_admit, choose_victim, run_protected
from autellix.sim.state import RUNNING, WAITING, SimCall, SimEngine, SimState


class Admission(SimState):
    """Admission, preemption and the running set of each engine."""

    _enqueue: object  # Queues._enqueue
    _push_cross: object  # Queues._push_cross
    # TenantShare (sim/tenants.py)
    fair: object
    _fair_best_waiting: Callable[[SimEngine], SimCall | None]
    _tenant_protects: Callable[[SimCall | None, SimCall], bool]
    _tenant_admitted: Callable[[SimCall, int], None]
    _tenant_decoded: Callable[[SimCall, int], None]

    def _worst_running(self, e: SimEngine) -> SimCall | None:
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

    def _best_waiting(self, e: SimEngine) -> SimCall | None:
        if self.fair is not None:
            return self._fair_best_waiting(e)
        wh = e.wheap
        while wh:
            _, _, _, ver, c = wh[0]
            if c.state != WAITING or c.ver != ver:
                heapq.heappop(wh)
                continue
            return c
        return None

    def _kv_need(self, e: SimEngine, c: SimCall) -> tuple[int, int, int, int]:
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

    def _admit(self, e: SimEngine, t: float) -> None:
        """Admit waiting calls in rank order (`policy.batch.can_admit`), preempting for the best
        one that does not fit (`_victim`), at most `max_preemptions_per_step` per iteration.

        Unlike `plan_batch` a victim is taken one at a time and KV room is rechecked after each
        (the victim's KV becomes an evictable cache entry, which a candidate list cannot say)."""
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
            if can_admit(
                free_slots=maxn - len(e.running),
                used_kv=kv.held() + e.n_gen,
                kv_tokens=need + (w.output > 0),
                kv_capacity=cap_tokens,
                idle=not e.running,
            ):
                self._start(e, w, t, reuse, own, hit)
                continue
            if not self.preemptive:
                return
            r = self._victim(e, w.lvl, w)
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

    def _victim(self, e: SimEngine, lvl: float, waiting: SimCall | None = None) -> SimCall | None:
        """The running call a priority preemption takes for a waiting call of rank `lvl`:
        `policy.batch.choose_victim` over the running calls, worst first (calls younger in their
        run than `min_run_tokens` are protected, so a call cannot ping-pong in and out)."""
        rh = e.rheap
        held: list = []
        step, min_run = e.step, self.min_run

        def worst_first() -> Iterator[tuple[float, bool, SimCall]]:
            while True:
                r = self._worst_running(e)
                if r is None:
                    return
                protected = run_protected(step - r.admit_step, min_run)
                yield r.lvl, protected or self._tenant_protects(waiting, r), r
                held.append(heapq.heappop(rh))

        found = choose_victim(worst_first(), lvl)
        for x in held:
            heapq.heappush(rh, x)
        return found

    def _start(self, e: SimEngine, c: SimCall, t: float, reuse: int, own: int, hit: int) -> None:
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
        self._tenant_admitted(c, new_tok)
        e.prefill += new_tok
        e.prefill_attn += new_tok * ctx
        c.used += self.pw * new_tok
        c.admit_step = e.step
        if self.srpt:
            c.v0 = c.lvl + e.step
        else:
            c.v0 = c.base + c.used - e.step
            c.lvl = self._wait_rank(c)  # the prefill may have moved it (prefill_weight)
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

    def _stop(self, e: SimEngine, c: SimCall, t: float) -> int:
        """Take a running call off the engine; returns its context tokens."""
        steps = e.step - c.admit_step
        if c.output > 0:
            done = min(steps, c.output - c.gen)
            c.gen += done
            c.used += done
        else:
            done = 0
        self.decoded += done
        self._tenant_decoded(c, done)
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

    def _preempt(self, e: SimEngine, c: SimCall, t: float) -> None:
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

    def _make_kv_room(self, e: SimEngine, t: float) -> None:
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
