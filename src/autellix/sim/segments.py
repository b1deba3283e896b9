"""Time on a simulated engine: decode segments (runs of identical iterations jumped at once), the
iteration costs of the engine profile, and when a newly queued call cuts a segment short.
"""

from __future__ import annotations

import heapq
import math

from autellix.sim.state import INF, RUNNING, WAITING, SimCall, SimEngine, SimState


class Segments(SimState):
    """Plans each engine's next segment and cuts it when something may change the batch."""

    _worst_running: object  # Admission._worst_running

    def _notify(self, e: SimEngine, c: SimCall, t: float) -> None:
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
                cut = INF
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

    def _seg_time(self, e: SimEngine, m: int) -> float:
        return m * e.seg_a + e.seg_c * (m * e.seg_ctx0 + e.seg_n * m * (m - 1) * 0.5)

    def _steps_by(self, e: SimEngine, t: float) -> int:
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

    def _plan(self, e: SimEngine, t: float) -> None:
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
            e.seg_dur = p.step_seconds(n_old, ctx_old, e.prefill, e.prefill_attn) + e.swap_s
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
