"""The simulator's records: one per program, call and engine, plus the simulation's shared state.

Plain mutable objects with `__slots__` (a run allocates ~10 per call and touches them on every
event, so attribute access speed is the simulator's speed). The rules that change them live in
`queues.py` (ranks, anti-starvation), `admission.py` (which calls run, preemption, KV),
`segments.py` (iteration timing), `accounting.py` (program service and outcomes) and `core.py`
(the event loop); every rule itself comes from `autellix.policy`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from autellix.policy.balance import BalancerConfig
from autellix.policy.gittins import GittinsConfig, GittinsHistory, GittinsTables, IndexCurve
from autellix.policy.priority import PriorityKind, ProgramService
from autellix.policy.registry import PolicyConfig
from autellix.policy.starvation import StarvationConfig
from autellix.sim.cache import KVCache
from autellix.sim.profile import EngineProfile
from autellix.sim.trace import CallRecord
from autellix.workloads.types import CallSpec, ProgramSpec

if TYPE_CHECKING:
    from collections.abc import Callable

WAITING, RUNNING, DONE, PENDING = 0, 1, 2, 3
INF = math.inf


class SimProgram:
    """A program: its service (what PLAS/ATLAS rank its calls by), starvation totals, outcome."""

    __slots__ = (
        "arrival",
        "cached",
        "exec_s",
        "finish",
        "hints",
        "key",
        "npre",
        "pclass",
        "pin",
        "prompt",
        "remaining_out",
        "running",
        "service",
        "spec",
        "tenant",
        "tp",
        "unfinished",
        "wait_s",
        "wp",
    )

    def __init__(self, spec: ProgramSpec, key: int) -> None:
        self.spec = spec
        self.key = key  # prefix-cache key of the program's context
        self.arrival = spec.arrival_s
        # PLAS's completed service and ATLAS's critical path (the live program table's columns)
        self.service = ProgramService()
        self.wp = 0.0  # starvation W_p
        self.tp = 0.0  # starvation T_p
        self.running: set[SimCall] = set()
        self.unfinished = len(spec.calls)
        self.remaining_out = spec.output_tokens
        self.pin: int | None = None
        self.finish = spec.arrival_s
        self.wait_s = 0.0
        self.exec_s = 0.0
        self.npre = 0
        self.cached = 0
        self.prompt = 0
        self.tenant = ""  # its tenant (sim option `tenants`; sim/tenants.py)
        self.pclass = spec.kind  # program class the gittins policy learns per (sim option)
        self.hints: list[tuple[float, int]] = []  # (hint, true remaining output) per hinted call


class SimCall:
    """A call: its rank, its progress (as of its last admission, preemption or finish) and the
    versions that invalidate stale heap entries and events."""

    __slots__ = (
        "admit_step",
        "aged",
        "base",
        "base0",
        "children",
        "ckey",
        "eng",
        "gcurve",
        "gen",
        "goff",
        "hint",
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

    def __init__(self, prog: SimProgram, spec: CallSpec, uid: int) -> None:
        self.prog = prog
        self.spec = spec
        self.uid = uid
        self.ckey = -(uid + 1)  # prefix-cache key of this call's own tokens when preempted
        self.prompt = spec.prompt_tokens
        self.output = spec.output_tokens
        self.prefix = min(spec.prefix_tokens, spec.prompt_tokens)
        self.children: list[SimCall] = []
        self.parents: list[SimCall] = []
        self.nparents = len(spec.parents)
        self.state = PENDING
        self.eng: SimEngine | None = None
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
        self.gcurve: IndexCurve | None = None  # gittins: the index curve it was issued with
        self.goff = 0.0  # gittins: value at which the curve's attained service is 0
        self.hint: float | None = None  # size hint it was issued with (remaining output)


class SimEngine:
    """An engine: waiting and running heaps, KV cache, and the decode segment in progress."""

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
        "theaps",
        "ver",
        "wheap",
    )

    def __init__(self, idx: int, kv_capacity: int) -> None:
        self.idx = idx
        self.kv = KVCache(kv_capacity)
        self.step = 0
        self.running: set[SimCall] = set()
        self.n_gen = 0  # running calls that decode tokens
        self.ctx_sum = 0  # total context tokens of decoding calls
        self.n_waiting = 0
        self.wheap: list = []  # (lvl, tb, uid, ver, call)
        self.theaps: dict[str, list] = {}  # fair share: tenant -> its waiting heap, same entries
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


class SimState:
    """What every part of the simulator reads and writes (set by `Simulator.__init__`)."""

    policy: PolicyConfig
    profile: EngineProfile
    balancer: BalancerConfig
    max_jump: int | None
    kind: PriorityKind
    binned: bool
    srpt: bool
    preemptive: bool
    caching: bool
    starv: StarvationConfig | None
    pw: float
    cap: int
    min_run: int
    block: int
    swap: bool
    swap_tok: float
    watermark: int
    budget: int
    engines: list[SimEngine]
    progs: list[SimProgram]
    records: list[CallRecord] | None
    _pending_prefill: dict[int, tuple[float, int]]
    prio_preempt: int
    young_preempt: int
    kv_preempt: int
    promotions: int
    recomputed: int
    decoded: int
    gittins: GittinsConfig | None
    ghistory: GittinsHistory | None
    gtables: GittinsTables | None
    hint_sigma: float | None
    seed: int
    _push: Callable[[float, int, object, int], None]
    _issue: Callable[[SimCall, float], None]
