"""`sim`: a simulated LLM engine (no model, no GPU) with a real engine's timing shape.

What it simulates, and why each part is there:

* **Batch steps.** One shared stepper advances every admitted sequence by one token per step, like
  a continuous-batching engine. A step takes the simulator's `EngineProfile.step_seconds` (the one
  timing model of a simulated engine) of the profile `SimConfig.profile()` builds from the flags:
  `token_latency_s + step_per_seq_s * batch + prefill_s_per_token * new uncached prompt tokens`,
  so prefill of a newly admitted call slows the whole batch for one step (no chunked prefill), and
  a call that arrives mid-step waits for the next step boundary. At most `max_batch` sequences
  step; the engine service never hands it more.
* **Deterministic tokens.** The next token is a hash of everything before it (a rolling 64-bit
  FNV-style state over prompt + generated tokens, plus `seed` when given), like greedy decoding
  of a fixed model. So a call preempted and resumed as a continuation (prompt + tokens so far),
  or re-dispatched to another simulated engine, produces exactly the tokens the uninterrupted
  call would have, and tests can compare streams token by token. Temperature is ignored.
* **Text.** `tokenize` estimates one token per 4 characters of text (the usual English-BPE rule
  of thumb; the ids are CRC32 hashes of each 4-character chunk). `detokenize` renders ids as
  pseudo-words from a fixed list, so demos show *simulated* text, not language.
* **Prefix cache.** Full 16-token blocks are chained-hashed into an LRU of `cache_tokens`
  capacity; a prompt's longest cached block prefix is reported as `cached_prompt_tokens` and
  skips prefill cost, which is what makes data-locality routing measurable in simulation.
* **Refusals.** Structured output and penalties are refused (`unsupported_on_backend`): the
  hash cannot be constrained or penalised, and an unconstrained answer would be a made-up one.
* **Stop.** Only `max_tokens` ("length") or a token in `stop_token_ids` ("stop"); the simulated
  model has no EOS unless `eos_token_id` is set, so call lengths are exactly what the workload
  asks for.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import zlib
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from autellix.backends.base import (
    BackendError,
    BackendStats,
    GenerationRequest,
    TokenChunk,
    WorkCounter,
)
from autellix.sim.profile import EngineProfile

_MASK = (1 << 64) - 1
_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_BLOCK = 16
CHARS_PER_TOKEN = 4

_WORDS = (
    "alpha bravo cobalt delta ember falcon garnet harbor indigo jasper kelvin lumen marble nectar "
    "onyx prism quartz raven sierra tundra umber vertex willow xenon yonder zephyr amber basalt "
    "cedar dune echo fjord glacier haze iris jade karst lagoon mesa nova orbit pebble quill reef "
    "summit tide ultra vale wave yarrow zenith atlas beacon canyon drift ember flint grove helix"
).split()


def unsupported(request: GenerationRequest) -> str:
    """What in `request` the simulated model cannot do, or "" (then it serves the request).

    Constrained decoding and penalties change which tokens a model samples; the simulated
    model's next token is a fixed hash, so it could only pretend to honour them. `seed` is
    honoured (it enters the hash) and stop strings are applied by the engine service."""
    parts = []
    if request.structured is not None:
        parts.append("structured output (response_format, or tool_choice required / a function)")
    if request.penalised():
        parts.append("presence/frequency/repetition penalties")
    if request.logprobs is not None:
        parts.append("logprobs (it has no probability distribution over tokens)")
    return " and ".join(parts)


def _mix(state: int, token: int) -> int:
    return ((state ^ (token & _MASK)) * _FNV_PRIME) & _MASK


def _roll(state: int, tokens: list[int]) -> int:
    for t in tokens:
        state = _mix(state, t)
    return state


@dataclass
class SimConfig:
    model: str = "simulated"
    max_batch: int = 8
    max_model_len: int = 131_072
    token_latency_s: float = 0.0
    step_per_seq_s: float = 0.0
    prefill_s_per_token: float = 0.0
    vocab_size: int = 32_000
    eos_token_id: int | None = None
    cache_tokens: int = 1_000_000
    kv_capacity_tokens: int = 1_000_000

    def profile(self) -> EngineProfile:
        """These flags as the simulator's engine profile, whose `step_seconds` times each step.

        The backend counts every sequence in the step (newly admitted ones too) in the
        per-sequence term and has no context-length terms; the name says it is simulated."""
        return EngineProfile(
            name=f"sim-backend-{self.model}",
            max_num_seqs=self.max_batch,
            kv_capacity_tokens=self.kv_capacity_tokens,
            base_s=self.token_latency_s,
            decode_per_seq_s=self.step_per_seq_s,
            prefill_per_token_s=self.prefill_s_per_token,
            block_size=_BLOCK,
            calibration="synthetic",
            source="the sim engine backend's flags (SIMULATED)",
        )


@dataclass
class _Seq:
    req: GenerationRequest
    out: asyncio.Queue[TokenChunk]
    state: int
    arrival: float
    uncached: int
    cached: int
    generated: list[int] = field(default_factory=list)
    started: bool = False
    reported_cache: bool = False
    done: bool = False


class _PrefixCache:
    """LRU of chained block hashes: hit length = longest prefix of full cached blocks."""

    def __init__(self, capacity_tokens: int) -> None:
        self.capacity = max(0, capacity_tokens // _BLOCK)
        self.blocks: OrderedDict[int, None] = OrderedDict()
        self.queries = 0
        self.hit_tokens = 0
        self.query_tokens = 0

    @staticmethod
    def _hashes(tokens: list[int]) -> list[int]:
        out, h = [], _FNV_OFFSET
        for i in range(0, len(tokens) - len(tokens) % _BLOCK, _BLOCK):
            h = _roll(h, tokens[i : i + _BLOCK])
            out.append(h)
        return out

    def lookup(self, tokens: list[int]) -> int:
        hit = 0
        for h in self._hashes(tokens):
            if h not in self.blocks:
                break
            self.blocks.move_to_end(h)
            hit += _BLOCK
        self.queries += 1
        self.hit_tokens += hit
        self.query_tokens += len(tokens)
        return hit

    def insert(self, tokens: list[int]) -> None:
        if self.capacity == 0:
            return
        for h in self._hashes(tokens):
            self.blocks[h] = None
            self.blocks.move_to_end(h)
        while len(self.blocks) > self.capacity:
            self.blocks.popitem(last=False)

    def hit_rate(self) -> float | None:
        return self.hit_tokens / self.query_tokens if self.query_tokens else None


class SimulatedBackend:
    """The `sim` backend: see the module docstring for what is simulated and how."""

    name = "sim"

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        self.model = self.config.model
        self.max_batch = self.config.max_batch
        self.max_model_len = self.config.max_model_len
        self.vocab_size = self.config.vocab_size  # the engine refuses token ids beyond it
        self._seqs: list[_Seq] = []
        self._wake = asyncio.Event()
        self._next_at: float | None = None  # deadline of the step in progress (`_pace`)
        self._task: asyncio.Task[None] | None = None
        self._cache = _PrefixCache(self.config.cache_tokens)
        self.steps = 0
        self._work = WorkCounter()  # cumulative (EngineWork in heartbeats)
        self._last_end: float | None = None

    # ----- lifecycle

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._stepper(), name="sim-stepper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # ----- text

    def tokenize(self, text: str) -> list[int]:
        vocab = self.config.vocab_size
        return [
            zlib.crc32(text[i : i + CHARS_PER_TOKEN].encode()) % vocab
            for i in range(0, len(text), CHARS_PER_TOKEN)
        ] or [0]

    def apply_chat_template(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> list[int]:
        """Chat messages → token ids via a plain `role: content` rendering (simulated); tools
        and an assistant's tool calls as JSON, so the prompt grows as a real template's would."""
        text = "".join(
            f"<{m['role']}>: {m['content']}"
            + (" " + json.dumps(m["tool_calls"]) if m.get("tool_calls") else "")
            + "\n"
            for m in messages
        )
        if tools:
            text = f"<tools>: {json.dumps(tools)}\n" + text
        return self.tokenize(text + "<assistant>: ")

    def detokenize(self, token_ids: list[int]) -> str | None:
        return "".join(" " + _WORDS[t % len(_WORDS)] for t in token_ids)

    def stats(self) -> BackendStats:
        active = [s for s in self._seqs if not s.done]
        running = min(len(active), self.max_batch)
        used = sum(len(s.req.prompt_token_ids) + len(s.generated) for s in active)
        return BackendStats(
            running=running,
            waiting=len(active) - running,
            kv_cache_usage=min(1.0, used / max(1, self.config.kv_capacity_tokens)),
            prefix_cache_hit_rate=self._cache.hit_rate(),
            work=self._work.snapshot(),
        )

    # ----- generation

    async def generate(self, request: GenerationRequest) -> AsyncIterator[TokenChunk]:
        refused = unsupported(request)
        if refused:
            raise BackendError(
                "unsupported_on_backend",
                f"the simulated engine cannot honour {refused}: its tokens are a hash of the "
                "context, not a model's sampling (use a vllm engine)",
            )
        if request.max_tokens < 0:
            raise BackendError("validation_error", "max_tokens must be >= 0")
        if len(request.prompt_token_ids) + request.max_tokens > self.max_model_len:
            raise BackendError(
                "prompt_too_long",
                f"prompt of {len(request.prompt_token_ids)} tokens + max_tokens "
                f"{request.max_tokens} exceeds the simulated model length {self.max_model_len}",
            )
        if self._task is None:
            await self.start()
        state = _FNV_OFFSET if request.seed is None else _mix(_FNV_OFFSET, request.seed)
        state = _roll(state, request.prompt_token_ids)
        cached = self._cache.lookup(request.prompt_token_ids)
        seq = _Seq(
            req=request,
            out=asyncio.Queue(),
            state=state,
            arrival=time.monotonic(),
            uncached=len(request.prompt_token_ids) - cached,
            cached=cached,
        )
        if request.max_tokens == 0:
            yield TokenChunk([], finish_reason="length", cached_prompt_tokens=cached)
            return
        self._seqs.append(seq)
        self._wake.set()
        try:
            while True:
                chunk = await seq.out.get()
                # hand over everything already produced in one chunk (fewer hops upstream)
                while not seq.out.empty() and chunk.finish_reason is None:
                    nxt = seq.out.get_nowait()
                    chunk = TokenChunk(
                        chunk.token_ids + nxt.token_ids,
                        nxt.finish_reason,
                        chunk.cached_prompt_tokens
                        if chunk.cached_prompt_tokens is not None
                        else nxt.cached_prompt_tokens,
                    )
                yield chunk
                if chunk.finish_reason is not None:
                    return
        finally:
            seq.done = True
            with contextlib.suppress(ValueError):
                self._seqs.remove(seq)
            self._cache.insert(list(request.prompt_token_ids) + seq.generated)

    async def _pace(self, step: float) -> None:
        """Wait until this step's deadline (see `_stepper`)."""
        now = time.monotonic()
        if self._next_at is None or self._next_at < now - step:
            self._next_at = now
        self._next_at += step
        await asyncio.sleep(max(0.0, self._next_at - time.monotonic()))

    async def _stepper(self) -> None:
        """Run engine steps back to back, each lasting exactly its modelled time.

        Steps are scheduled against deadlines (`next_at += step`), not by sleeping `step` after
        each step's processing: a plain sleep adds the processing time and the event loop's lag
        to every step, which made a busy simulated engine 5-25% slower than its own flags
        (bench/live/stepper_drift.py) and live runs disagree with the simulator. After an idle
        period, or when the process fell more than a step behind (no CPU at all), the schedule
        re-anchors at "now" instead of bursting steps to catch up."""
        cfg = self.config
        timing = cfg.profile()
        self._next_at = None
        while True:
            batch = [s for s in self._seqs if not s.done][: self.max_batch]
            if not batch:
                self._wake.clear()
                self._next_at = self._last_end = None
                await self._wake.wait()
                continue
            new = [s for s in batch if not s.started]
            new_prefill = sum(s.uncached for s in new)
            step = timing.step_seconds(len(batch), 0.0, new_prefill)
            for s in batch:
                s.started = True
            await self._pace(step)
            self.steps += 1
            # a step's real length: from the previous step's end (back to back) to this one's
            end = time.monotonic()
            took = step if self._last_end is None else end - self._last_end
            self._last_end = end
            self._work.add_step(  # what the step really took, next to what it modelled
                generated=sum(1 for s in batch if not s.done),
                prompt=sum(s.uncached + s.cached for s in new),
                cached=sum(s.cached for s in new),
                busy_s=took,
                running=len(batch),
                idle=len(batch) < self.max_batch,
            )
            for s in batch:
                if s.done:
                    continue
                tok = (s.state >> 17) % cfg.vocab_size
                s.state = _mix(s.state, tok)
                s.generated.append(tok)
                reason: str | None = None
                if len(s.generated) >= s.req.max_tokens:
                    reason = "length"
                elif tok in s.req.stop_token_ids or (
                    tok == cfg.eos_token_id and not s.req.ignore_eos
                ):
                    reason = "stop"
                cached = None
                if not s.reported_cache:
                    cached, s.reported_cache = s.cached, True
                s.out.put_nowait(TokenChunk([tok], reason, cached))
                if reason is not None:
                    s.done = True
            self._seqs = [s for s in self._seqs if not s.done]


def _sim_model_name(model: str | None) -> str:
    """Whatever it imitates, a simulated engine says so in its model name."""
    if not model:
        return "simulated"
    return model if "simulated" in model else f"simulated-{model}"


def create(
    *,
    model: str | None = None,
    max_batch: int = 8,
    max_model_len: int | None = None,
    token_latency_s: float = 0.0,
    step_per_seq_s: float = 0.0,
    prefill_s_per_token: float = 0.0,
    **extra: Any,
) -> SimulatedBackend:
    """Factory used by the engine service (`--backend sim`); unknown options are an error."""
    cfg = SimConfig(
        model=_sim_model_name(model),
        max_batch=max_batch,
        max_model_len=max_model_len or SimConfig.max_model_len,
        token_latency_s=token_latency_s,
        step_per_seq_s=step_per_seq_s,
        prefill_s_per_token=prefill_s_per_token,
    )
    for key, value in extra.items():
        if not hasattr(cfg, key):
            raise ValueError(f"unknown sim backend option {key!r}")
        current = getattr(cfg, key)
        setattr(cfg, key, type(current)(value) if current is not None else int(value))
    return SimulatedBackend(cfg)
