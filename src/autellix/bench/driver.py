"""Run workload programs (`ProgramSpec`) against a live Autellix stack through the Python client.

Shared by `autellix demo` and `autellix bench live`: each program is an agent that opens a session
at its arrival time, issues each call once its parents finished (plus its tool delay), and closes
the session. Prompts are token ids built so that a call's prompt really starts with its parent's
context (prompt + output), so prefix caching on a real engine sees the reuse the workload models.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from autellix.bench.callpath import CallPath, call_path
from autellix.client import CallFailed, CallResult, Client
from autellix.sim.results import ProgramOutcome
from autellix.workloads.types import CallSpec, ProgramSpec

VOCAB = 30_000  # token ids drawn below this (fits any real tokenizer's vocabulary)


@dataclass
class ProgramRun:
    """One program's fate on the live stack (seconds relative to the workload's start)."""

    program_id: str
    kind: str
    arrival_s: float
    finish_s: float = 0.0
    output_tokens: int = 0
    calls: int = 0
    threads: int = 1
    failed_calls: int = 0
    preemptions: int = 0
    queue_s: float = 0.0  # summed over calls: accepted → started
    engines: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    paths: list[CallPath] = field(default_factory=list)  # each answered call's hops

    @property
    def latency_s(self) -> float:
        return self.finish_s - self.arrival_s

    def outcome(
        self, executing_s: float, preemptions: int, cached_prompt_tokens: int, prompt_tokens: int
    ) -> ProgramOutcome:
        """This run as the simulator's `ProgramOutcome`, so the same metrics apply; the figures
        the driver does not see (run time, preemptions, prompt tokens) come from the caller,
        which reads them from the engines it ran on."""
        return ProgramOutcome(
            program_id=self.program_id,
            kind=self.kind,
            arrival_s=self.arrival_s,
            finish_s=self.finish_s,
            output_tokens=self.output_tokens,
            calls=self.calls,
            waiting_s=self.queue_s,
            executing_s=executing_s,
            preemptions=preemptions,
            cached_prompt_tokens=cached_prompt_tokens,
            prompt_tokens=prompt_tokens,
        )

    @property
    def latency_per_token_s(self) -> float:
        return self.latency_s / max(1, self.output_tokens)

    @property
    def ok(self) -> bool:
        return self.failed_calls == 0


def _fresh(rng: random.Random, n: int) -> list[int]:
    return [rng.randrange(100, VOCAB) for _ in range(max(0, n))]


async def run_program(
    client: Client,
    spec: ProgramSpec,
    t0: float,
    *,
    time_scale: float = 1.0,
    call_timeout: float | None = None,
    on_call: Callable[[ProgramRun, CallResult | None], None] | None = None,
    id_prefix: str = "",
) -> ProgramRun:
    """Replay one program; never raises for a failed call (it is counted in the result).

    `id_prefix` makes program ids unique per run, so a durable database can host many runs.
    """
    run = ProgramRun(id_prefix + spec.program_id, spec.kind, spec.arrival_s * time_scale)
    run.threads = len({c.thread_id for c in spec.calls})
    await asyncio.sleep(max(0.0, t0 + run.arrival_s - time.monotonic()))
    rng = random.Random(spec.program_id)
    results: dict[int, CallResult | None] = {}
    contexts: dict[int, list[int]] = {}
    done: dict[int, asyncio.Event] = {c.index: asyncio.Event() for c in spec.calls}

    async def one(call: CallSpec, program: object) -> None:
        try:
            for parent in call.parents:
                await done[parent].wait()
            if call.delay_s > 0:
                await asyncio.sleep(call.delay_s * time_scale)
            base: list[int] = []
            if call.parents:
                base = max((contexts.get(p, []) for p in call.parents), key=len)
            prefix = base[: call.prefix_tokens]
            prompt = prefix + _fresh(rng, call.prompt_tokens - len(prefix))
            parents = [r.call_id for p in call.parents if (r := results.get(p)) is not None]
            caller = program.thread(f"t{call.thread_id}")  # type: ignore[attr-defined]
            try:
                result = await caller.call(
                    prompt_token_ids=prompt or _fresh(rng, 1),
                    max_tokens=max(1, call.output_tokens),
                    sampling={"ignore_eos": True, "temperature": 0.0},
                    parents=parents,
                    client_call_id=f"c{call.index}",
                    timeout=call_timeout,
                )
            except CallFailed as exc:
                run.failed_calls += 1
                run.errors.append(f"call {call.index}: {exc.code}: {exc}")
                results[call.index] = None
                contexts[call.index] = prompt
                if on_call:
                    on_call(run, None)
                return
            results[call.index] = result
            run.paths.append(call_path(result.timing, result.latency_s))
            contexts[call.index] = prompt + list(result.token_ids)
            run.calls += 1
            run.output_tokens += result.usage.completion_tokens
            run.preemptions += result.preemptions
            run.queue_s += result.timing.queue_s
            run.engines.add(result.engine.engine_id)
            if on_call:
                on_call(run, result)
        finally:
            done[call.index].set()

    try:
        async with client.program(run.program_id, metadata={"kind": spec.kind}) as program:
            await asyncio.gather(*(one(c, program) for c in spec.calls))
    except CallFailed as exc:  # opening/closing the program failed
        run.failed_calls += len(spec.calls) - run.calls
        run.errors.append(f"program: {exc.code}: {exc}")
    run.finish_s = time.monotonic() - t0
    return run


async def run_workload(
    client: Client,
    programs: Sequence[ProgramSpec],
    *,
    time_scale: float = 1.0,
    call_timeout: float | None = None,
    on_call: Callable[[ProgramRun, CallResult | None], None] | None = None,
    on_program: Callable[[ProgramRun], None] | None = None,
    id_prefix: str = "",
) -> tuple[list[ProgramRun], float]:
    """Run every program at its arrival time; returns the runs and the wall time taken."""
    t0 = time.monotonic()

    async def wrapped(spec: ProgramSpec) -> ProgramRun:
        run = await run_program(
            client,
            spec,
            t0,
            time_scale=time_scale,
            call_timeout=call_timeout,
            on_call=on_call,
            id_prefix=id_prefix,
        )
        if on_program:
            on_program(run)
        return run

    runs = await asyncio.gather(*(wrapped(p) for p in programs))
    return list(runs), time.monotonic() - t0
