"""The policy seam: the live scheduler's decisions, made by the pure policy core.

Nothing here re-implements a rule: every number comes from `autellix.policy` (the functions the
simulator uses), applied to the program table the scheduler loaded from Postgres:

* **base** of a new call: `ProgramService.base_for` (PLAS: completed service + the progress of
  the program's unfinished calls; ATLAS: the scalar critical path), `atlas_exact_base` over the
  parents' (base, service) for `atlas-exact`, 0 for `mlfq` and `fcfs`. A re-dispatched call
  (its engine was lost) keeps the base, rank and order it was issued with.
* **anti-starvation at issue**: `is_aged` (age rule) and `should_promote` (the paper's ratio
  rule, only below the top queue) — as the simulator applies them when a call is enqueued.
* **level and order**: `call_rank(value = rank_base + service)` → `(level, tiebreak)`.
* **engine**: `choose_engine` over the live engines' load (calls in flight: running + waiting
  from heartbeats + this replica's dispatches since) and the program's engine pin.

Later decisions for calls already on an engine use the same functions: `level_after` (demotion
when folded progress crosses a queue boundary) and `promotion` (anti-starvation pass).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from autellix.policy import (
    BalancerConfig,
    BalancerKind,
    MLFQConfig,
    PolicyConfig,
    PriorityKind,
    ProgramService,
    StarvationConfig,
    atlas_exact_base,
    call_rank,
    choose_engine,
    get_policy,
    should_promote,
)
from autellix.policy.balance import skewed
from autellix.policy.gittins import Lookup
from autellix.policy.load_index import LoadIndex
from autellix.policy.starvation import aging_reason, is_aged, wait_ratio
from autellix.services.scheduler.engines import EngineRegistry, EngineView
from autellix.services.scheduler.gittins_table import GittinsTable
from autellix.store.dispatch import CallRow
from autellix.store.gittins import CLASS_KEY, HINT_KEY
from autellix.store.levels import LevelChange, StarvationRow
from autellix.wire.protocol import NEVER_PREEMPT

CHARS_PER_TOKEN = 4  # prompt length estimate for text prompts (the scheduler has no tokenizer)
LIVE_POLICIES = (
    "fcfs",
    "fcfs-nocache",
    "mlfq",
    "plas",
    "plas-np",
    "atlas",
    "atlas-exact",
    "gittins",
)


@dataclass(frozen=True, slots=True)
class Decision:
    engine_id: str
    level: int
    priority: float  # the call's base (what it was issued with; ATLAS accounting)
    reason: str
    rank_base: float = 0.0
    tiebreak: float = 0.0
    aged: bool = False
    restart: bool = False  # promoted at issue: W_c, T_c restart
    value: float = 0.0
    pin: str | None = None  # program's engine pin after this decision, when it changed


@dataclass(frozen=True)
class LivePolicy:
    """A `PolicyConfig` + `BalancerConfig`, as the scheduler flags chose them."""

    policy: PolicyConfig
    balancer: BalancerConfig = field(default_factory=BalancerConfig)
    # gittins only: the replica's index tables (refreshed from Postgres by its own task)
    gittins: GittinsTable | None = None

    @classmethod
    def build(
        cls,
        name: str = "atlas",
        *,
        quantum: float | None = None,
        levels: int | None = None,
        growth: float | None = None,
        beta: float | str | None = "default",
        age_s: float | str | None = "default",
        slowdown: float | None = None,
        within_level: str | None = None,
        min_run_tokens: int | None = None,
        prefill_weight: float | None = None,
        balancer: str = "locality",
        short_prompt_tokens: int = 2048,
        guard_abs: float | None = 64.0,
        guard_ratio: float = 1.5,
    ) -> LivePolicy:
        """Named policy with overrides; "default" keeps the named policy's value."""
        if name not in LIVE_POLICIES:
            raise ValueError(
                f"policy {name!r} cannot run live; choose one of {', '.join(LIVE_POLICIES)}"
            )
        base = get_policy(name)
        changes: dict[str, Any] = {}
        if quantum is not None or levels is not None or growth is not None:
            changes["mlfq"] = MLFQConfig.geometric(levels, quantum, growth)  # None: default
        if beta != "default" or age_s != "default" or slowdown is not None:
            st = base.starvation
            changes["starvation"] = StarvationConfig(
                beta=st.beta if beta == "default" else beta,  # type: ignore[arg-type]
                eps=st.eps,
                age_s=st.age_s if age_s == "default" else age_s,  # type: ignore[arg-type]
                slowdown=st.slowdown if slowdown is None else slowdown,
                slowdown_floor_s=st.slowdown_floor_s,
            )
        if within_level is not None:
            changes["within_level"] = within_level
        if min_run_tokens is not None:
            changes["min_run_tokens"] = min_run_tokens
        if prefill_weight is not None:
            changes["units"] = type(base.units)(prefill_weight=prefill_weight)
        policy = base.replace(**changes) if changes else base
        if policy.mlfq.boundaries is None:
            raise ValueError("live scheduling needs binned levels (not continuous priorities)")
        gcfg = policy.gittins
        return cls(
            policy=policy,
            gittins=GittinsTable(gcfg) if gcfg is not None else None,
            balancer=BalancerConfig(
                kind=BalancerKind(balancer),
                short_prompt_tokens=short_prompt_tokens,
                guard_abs=guard_abs,
                guard_ratio=guard_ratio,
            ),
        )

    # ------------------------------------------------------------------ helpers

    @property
    def name(self) -> str:
        return self.policy.name

    def describe(self) -> dict[str, Any]:
        p = self.policy
        return {
            "policy": p.name,
            "boundaries": list(p.mlfq.boundaries or ()),
            "beta": p.starvation.beta,
            "age_s": p.starvation.age_s,
            "slowdown": p.starvation.slowdown,
            "within_level": p.within_level,
            "preemptive": p.preemptive,
            "min_run_tokens": p.min_run_tokens,
            "balancer": self.balancer.kind.value,
        }

    @property
    def min_run_tokens(self) -> int:
        """What each Dispatch tells the engine. The engine preempts a running call for a waiting
        one of a strictly better level, so a non-preemptive policy whose calls still get
        different levels (`plas-np`) protects every run for good; FCFS puts all calls at one
        level and needs nothing."""
        if self.policy.preemptive:
            return self.policy.min_run_tokens
        return NEVER_PREEMPT if self.policy.binned else 0

    def rank(self, value: float, *, issue_s: float, arrival_s: float, aged: bool):
        return call_rank(
            self.policy, value=value, issue_s=issue_s, program_arrival_s=arrival_s, aged=aged
        )

    def base_for(self, call: CallRow) -> float:
        """The base a newly issued call starts from (see module docstring); gittins reads the
        program's total (PLAS) or critical-path (ATLAS) service, as `GittinsConfig.attained`
        says."""
        kind = self.policy.priority
        gcfg = self.policy.gittins
        if gcfg is not None:
            kind = PriorityKind.PLAS if gcfg.attained == "plas" else PriorityKind.ATLAS
        if kind is PriorityKind.ATLAS_EXACT:
            pairs = zip(call.parents_base or (), call.parents_service or (), strict=True)
            return atlas_exact_base(pairs)
        program = ProgramService(completed=call.program_completed, critical=call.program_service)
        progress = max(0.0, call.program_attained - call.program_completed)
        return program.base_for(kind, [progress])

    # ------------------------------------------------------------------ dispatch

    def decide(
        self, call: CallRow, engines: Sequence[EngineView] | EngineRegistry, counter: int = 0
    ) -> Decision | None:
        """Level, order and engine for a queued call; None when no live engine serves its
        model. `engines`: the scheduler's registry (its per-model load index: no scan of the
        engines), or a list of engines taken as live."""
        registry = engines if isinstance(engines, EngineRegistry) else EngineRegistry.of(engines)
        candidates = registry.candidates(requested_model(call))
        if candidates is None:
            return None
        st = self.policy.starvation
        notes: list[str] = []
        if call.attempts > 0:  # re-dispatch: keep what it was issued with
            base, rank_base, aged = call.priority, call.rank_base, call.aged
        else:
            base = self.base_for(call)
            rank_base, aged = base, False
        restart = False
        age = call.now_s - call.program_created_s
        if not aged and is_aged(st, age, run_s=call.program_run_s):
            aged = True
            notes.append(aging_reason(st, age, run_s=call.program_run_s))
        look, level, tiebreak = self._issue_rank(call, rank_base + call.service, aged)
        if not aged and st.beta is not None and level > 0 and call.attempts == 0:
            # a fresh call has only waited (in the scheduling queue) so far; a re-dispatched
            # one is left to the anti-starvation pass, which knows its W_c and T_c
            t_c, w_c = 0.0, max(0.0, call.now_s - call.accepted_s)
            w_p, t_p = call.program_wait_s, call.program_run_s
            if should_promote(st, w_p=w_p, w_c=w_c, t_p=t_p, t_c=t_c):
                ratio = wait_ratio(w_p, w_c, t_p, t_c, st.eps)
                rank_base, restart = -call.service, True
                look, level, tiebreak = self._issue_rank(call, 0.0, False)
                notes.append(f"promoted at issue: wait/run ratio {ratio:.1f} >= beta {st.beta:g}")
        engine, pin, why = self.place(call, candidates, counter)
        index = "" if look is None else f" -> {explain_index(look)}"
        reason = (
            f"{self.policy.name}: base {base:g} + service {call.service:g} = value "
            f"{rank_base + call.service:g}{index} -> level {int(level)}; {why}"
        )
        if notes:
            reason += "; " + "; ".join(notes)
        return Decision(
            engine_id=engine,
            level=int(level),
            priority=base,
            reason=reason,
            rank_base=rank_base,
            tiebreak=float(tiebreak),
            aged=aged,
            restart=restart,
            value=rank_base + call.service,
            pin=pin,
        )

    def _issue_rank(
        self, call: CallRow, value: float, aged: bool
    ) -> tuple[Lookup | None, float, float]:
        """Level and tiebreak of `call` issued at service `value`: gittins ranks by the index
        lookup's effective size (returned too, for the reason), every other policy by `value`."""
        look = self.index(call, value)
        level, tiebreak = self.rank(
            value if look is None else look.effective,
            issue_s=call.accepted_s,
            arrival_s=call.program_created_s,
            aged=aged,
        )
        return look, level, tiebreak

    def index(self, call: CallRow, value: float) -> Lookup | None:
        """gittins: the index lookup behind the rank of a call at `value` (None otherwise).
        The class and hint come from the call's metadata (`autellix.class`, `autellix.hint`);
        a hint is about what remains from this call on, so it is read at the call's own
        service."""
        if self.gittins is None:
            return None
        program_class, hint = call_labels(call)
        return self.gittins.tables.lookup(program_class, value, hint=hint, since_hint=call.service)

    def place(
        self, call: CallRow, engines: Sequence[EngineView] | LoadIndex, counter: int
    ) -> tuple[str, str | None, str]:
        """(engine id, new pin or None if unchanged, why) via `choose_engine` over the engines'
        load index (positions are ranks by id)."""
        loads = engines if isinstance(engines, LoadIndex) else index_of(engines)
        pin = loads.position(call.engine_affinity)
        tokens = prompt_tokens(call)
        choice = choose_engine(
            self.balancer, loads=loads, prompt_tokens=tokens, pin=pin, counter=counter
        )
        engine = loads.id_at(choice.engine)
        new_pin = loads.id_at(choice.pin) if choice.pin is not None else None
        cfg = self.balancer
        load = (
            f"load {loads.load_of(engine):g}; {len(loads)} engines, loads "
            f"{loads.lowest():g}..{loads.highest():g}"
        )
        if len(loads) == 1:
            why = f"only live engine {engine}"
        elif cfg.kind is BalancerKind.ROUND_ROBIN:
            why = f"round-robin -> {engine}"
        elif cfg.kind is BalancerKind.LEAST_LOADED:
            why = f"least-loaded -> {engine} ({load})"
        elif tokens <= cfg.short_prompt_tokens:
            why = f"short prompt (~{tokens} tokens) -> least-loaded {engine} ({load})"
        elif skewed(loads, cfg):
            why = (
                f"long prompt (~{tokens} tokens) but load skewed (guard: max-min > "
                f"{cfg.guard_abs:g} and max > {cfg.guard_ratio:g}x min) -> least-loaded "
                f"{engine} ({load})"
            )
        elif pin is None:
            why = f"first long prompt (~{tokens} tokens) -> pinned to least-loaded {engine}"
        else:
            why = f"long prompt (~{tokens} tokens) -> affinity to pinned {engine} ({load})"
        changed = new_pin if new_pin is not None and new_pin != call.engine_affinity else None
        return engine, changed, why

    # ------------------------------------------------------------------ later decisions

    def level_after(
        self, *, rank_base: float, service: float, aged: bool, current: int | None = None
    ) -> int:
        """The level an active call belongs in now (demotion when it grew past its queue).

        gittins keeps `current`: its level is the effective size read through the call's
        class and hint curve at issue, and the folded progress rows do not carry the class
        (re-levelling running calls live is not done yet; the simulator does it)."""
        if self.gittins is not None and current is not None:
            return current
        level, _ = self.rank(rank_base + service, issue_s=0.0, arrival_s=0.0, aged=aged)
        return int(level)

    def promotion(self, row: StarvationRow) -> LevelChange | None:
        """The anti-starvation rules for a waiting call (None: leave it where it is)."""
        st = self.policy.starvation
        if not st.enabled:
            return None
        t_c = max(0.0, row.run_s - row.reset_run_s)
        age, run = row.now_s - row.program_created_s, row.program_run_s + t_c
        if is_aged(st, age, run_s=run):
            level, tiebreak = self.rank(
                0.0, issue_s=0.0, arrival_s=row.program_created_s, aged=True
            )
            return LevelChange(
                call_id=row.id,
                from_level=row.level,
                to_level=int(level),
                reason=f"{aging_reason(st, age, run_s=run)} (sticky top queue)",
                value=row.rank_base + row.service,
                aged=True,
                tiebreak=float(tiebreak),
            )
        if st.beta is None or row.level <= 0:
            return None
        w_c = max(0.0, row.now_s - row.reset_s - t_c)
        w_p, t_p = row.program_wait_s, row.program_run_s
        if not should_promote(st, w_p=w_p, w_c=w_c, t_p=t_p, t_c=t_c):
            return None
        ratio = wait_ratio(w_p, w_c, t_p, t_c, st.eps)
        level, _ = self.rank(0.0, issue_s=0.0, arrival_s=0.0, aged=False)
        return LevelChange(
            call_id=row.id,
            from_level=row.level,
            to_level=int(level),
            reason=(
                f"anti-starvation: (W_p {w_p:.2f} + W_c {w_c:.2f}) / max(eps, T_p {t_p:.2f} + "
                f"T_c {t_c:.2f}) = {ratio:.1f} >= beta {st.beta:g}; fresh quantum"
            ),
            value=0.0,
            restart=True,
        )


@lru_cache(maxsize=1024)
def stored_request(request_json: str) -> dict[str, Any]:
    """The stored request as a dict, parsed once per decision however many of its fields the
    decision reads (the model, the class and hint labels). Read-only: it is shared."""
    try:
        parsed = json.loads(request_json)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def index_of(engines: Iterable[EngineView]) -> LoadIndex:
    """A `LoadIndex` of these engines' loads (callers that hold a list)."""
    idx = LoadIndex()
    for e in engines:
        idx.set(e.id, float(e.load))
    return idx


def requested_model(call: CallRow) -> str | None:
    """The model the call asks for (from the stored request: the frontend validated it); None
    when it names none (a request without the key is not parsed)."""
    raw = call.request_json
    model = stored_request(raw).get("model") if raw and '"model"' in raw else None
    return model if isinstance(model, str) else None


def call_labels(call: CallRow) -> tuple[str | None, float | None]:
    """(class, hint) from the call's stored request metadata; a hint that is not a
    non-negative number is ignored (hints are advisory). A request without either key is not
    parsed (a substring test: most calls carry no labels)."""
    if "autellix." not in call.request_json:
        return None, None
    meta = stored_request(call.request_json).get("metadata") or {}
    if not isinstance(meta, dict):
        return None, None
    program_class = meta.get(CLASS_KEY) or None
    hint: float | None = None
    try:
        raw = meta.get(HINT_KEY)
        hint = float(raw) if raw is not None else None
    except (TypeError, ValueError):
        hint = None
    if hint is not None and not (math.isfinite(hint) and hint >= 0):
        hint = None
    return program_class, hint


def explain_index(look: Lookup) -> str:
    """The part of a decision's reason that says what the index was read from."""
    hint = "no hint" if look.hint is None else f"hint {look.hint:g}"
    return (
        f"class {look.program_class or '(none)'}, {hint}: Gittins index {look.index:.3g} at "
        f"attained {look.attained:g} ({look.curve.source}, {look.curve.samples} samples) = "
        f"effective size {look.effective:.4g}"
    )


def prompt_tokens(call: CallRow) -> int:
    """Prompt length in tokens: exact for token ids, ~4 characters per token for text (the
    scheduler has no tokenizer; the locality rule only needs to tell short from long)."""
    if call.prompt_ids_len is not None:
        return call.prompt_ids_len
    return math.ceil(call.prompt_chars / CHARS_PER_TOKEN)
