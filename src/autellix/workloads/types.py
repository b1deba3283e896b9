"""Plain data for agentic programs: what a workload is, independent of who runs it.

The simulator, the live benchmark and the demo all consume these. A program is a DAG of calls;
nothing here is known to the scheduler in advance (it is non-clairvoyant) — only the simulator's
`srpt` oracle may read future calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class CallSpec:
    """One LLM call of a program.

    index: position in `ProgramSpec.calls`; parents always have smaller indices.
    thread_id: the program thread issuing the call (0 for single-threaded programs).
    parents: indices of calls that must finish before this one is issued.
    prompt_tokens: full prompt length in tokens (including any history).
    output_tokens: number of tokens the call decodes (>= 0).
    prefix_tokens: leading prompt tokens equal to the context of the program's earlier calls
        (history) — reusable from the prefix cache if that context is still cached on the engine.
    delay_s: tool / human time between the last parent finishing (or program arrival for a root
        call) and this call being issued.
    """

    index: int
    thread_id: int
    parents: tuple[int, ...]
    prompt_tokens: int
    output_tokens: int
    prefix_tokens: int = 0
    delay_s: float = 0.0

    @property
    def context_tokens(self) -> int:
        """What an engine holds of this call once it finished (prompt + output): the most a
        child call can reuse from it as a cached prefix."""
        return self.prompt_tokens + self.output_tokens


@dataclass(frozen=True, slots=True)
class ProgramSpec:
    """An agentic program: its kind (sharegpt, bfcl, lats, ...), arrival time and call DAG."""

    program_id: str
    kind: str
    arrival_s: float
    calls: tuple[CallSpec, ...]
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def output_tokens(self) -> int:
        return sum(c.output_tokens for c in self.calls)

    @property
    def multi_threaded(self) -> bool:
        return len({c.thread_id for c in self.calls}) > 1
