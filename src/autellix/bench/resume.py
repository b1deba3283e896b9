"""`autellix bench resume`: what a preemption costs through the whole stack on the REAL vLLM
engine.

One engine with a batch of 1, behind the real frontend and scheduler. Per trial: a victim call
(prompt of N tokens, 400 greedy output tokens) starts streaming; it is demoted (a scheduler
`Control(set_level)`, as the policy does when a call uses up its quantum); a one-token call of a
new program arrives at level 0 and preempts it (abort in vLLM); when that call is done the victim
resumes as a continuation (prompt + tokens so far). Measured from the caller's side:

* `resume_s`: the top call's final -> the victim's next token. It covers the engine service's
  bookkeeping (two Postgres transitions), re-admission, and vLLM's prefill of the continuation
  -- served from the prefix cache, except the part of the last 128-token block not yet full;
* `stall_s`: the longest pause in the victim's stream (abort + the top call's whole run +
  resume).

The same trials run on an engine with prefix caching off, so the re-prefill is a full recompute:
the difference is what prefix caching saves on every preemption. Writes `resume.json` (every
trial, the per-size summary) and `resume.md`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autellix.bench.plain_vllm import VllmEngineSpec
from autellix.bench.reporting import command_line, load_avg, md_table_lines
from autellix.bench.stack import Infra
from autellix.bench.vllm_suite import model_label
from autellix.local.stack import EngineConfig, Stack, StackConfig
from autellix.runtime.settings import Settings
from autellix.wire.protocol import (
    CALL_REPLY,
    CallAccepted,
    CallError,
    CallFinal,
    CallRequest,
    Control,
    SamplingParams,
    TokenDelta,
    encode,
)


class Recorder:
    """Raw replies with arrival times, per inbox token."""

    def __init__(self, nc: Any, submit: str) -> None:
        self.nc, self.submit_subject = nc, submit
        self.prefix = nc.new_inbox()
        self.msgs: dict[str, list[tuple[float, Any]]] = {}
        self.done: dict[str, asyncio.Event] = {}
        self.n = 0

    async def start(self) -> None:
        await self.nc.subscribe(f"{self.prefix}.*", cb=self._on)

    async def _on(self, msg: Any) -> None:
        tok = msg.subject.rsplit(".", 1)[-1]
        reply = CALL_REPLY.validate_json(msg.data)
        self.msgs.setdefault(tok, []).append((time.monotonic(), reply))
        if isinstance(reply, CallFinal | CallError):
            self.done[tok].set()

    async def submit(self, req: CallRequest) -> str:
        self.n += 1
        tok = f"c{self.n}"
        self.done[tok] = asyncio.Event()
        self.msgs[tok] = []
        await self.nc.publish(self.submit_subject, encode(req), reply=f"{self.prefix}.{tok}")
        return tok

    def tokens(self, tok: str) -> int:
        return sum(len(m.token_ids) for _, m in self.msgs[tok] if isinstance(m, TokenDelta))

    def call_id(self, tok: str) -> str | None:
        return next((m.call_id for _, m in self.msgs[tok] if isinstance(m, CallAccepted)), None)

    def final(self, tok: str) -> tuple[float, Any]:
        return next((t, m) for t, m in self.msgs[tok] if isinstance(m, CallFinal | CallError))


async def trials(
    stack: Stack,
    sizes: list[int],
    repeat: int,
    vocab: int,
    seed: int,
    on_trial: Callable[[dict[str, Any]], None],
) -> list[dict[str, Any]]:
    """Every (size, trial) on the running stack; one row per trial."""
    import nats

    nc = await nats.connect(stack.settings.nats_url)
    rec = Recorder(nc, stack.subjects.submit)
    await rec.start()
    engine = stack.engine_ids[0]
    rng = random.Random(seed)
    # program ids of their own: a finished program is closed, and the database may be reused
    run = uuid.uuid4().hex[:8]
    out = []
    greedy = {"temperature": 0.0, "ignore_eos": True}
    try:
        for size in sizes:
            for i in range(repeat):
                prompt = [rng.randrange(100, vocab) for _ in range(size)]
                victim = await rec.submit(
                    CallRequest(
                        program_id=f"victim-{size}-{i}-{run}",
                        prompt_token_ids=prompt,
                        sampling=SamplingParams(max_tokens=400, **greedy),
                    )
                )
                while rec.tokens(victim) < 20:
                    assert not rec.done[victim].is_set(), rec.msgs[victim][-1]
                    await asyncio.sleep(0.005)
                cid = rec.call_id(victim)
                ctl = Control(action="set_level", call_id=cid, level=5, seq=1 << 30)
                await nc.publish(stack.subjects.control(engine), encode(ctl))
                await asyncio.sleep(0.05)
                t_top = time.monotonic()
                top = await rec.submit(
                    CallRequest(
                        program_id=f"top-{size}-{i}-{run}",
                        prompt_token_ids=[rng.randrange(100, vocab) for _ in range(16)],
                        sampling=SamplingParams(max_tokens=1, **greedy),
                    )
                )
                await asyncio.wait_for(rec.done[top].wait(), 300)
                await asyncio.wait_for(rec.done[victim].wait(), 600)
                t_top_final, top_final = rec.final(top)
                _, vfinal = rec.final(victim)
                assert isinstance(vfinal, CallFinal) and isinstance(top_final, CallFinal), vfinal
                deltas = [(t, m) for t, m in rec.msgs[victim] if isinstance(m, TokenDelta)]
                resumed = [t for t, _ in deltas if t > t_top_final]
                gaps = [b[0] - a[0] for a, b in itertools.pairwise(deltas)]
                row = {
                    "prompt_tokens": size,
                    "trial": i,
                    "preemptions": vfinal.preemptions,
                    "victim_tokens": len(vfinal.token_ids or []),
                    "victim_cached_tokens_first_run": vfinal.usage.cached_tokens,
                    "top_latency_s": t_top_final - t_top,
                    "top_run_s": top_final.timing.run_s,
                    "resume_s": (resumed[0] - t_top_final) if resumed else None,
                    "stall_s": max(gaps) if gaps else None,
                }
                on_trial(row)
                out.append(row)
    finally:
        await nc.close()
    return out


@dataclass
class ResumeConfig:
    """The engine and the trials of one resume benchmark."""

    model: str = "dummy:bench"
    sizes: list[int] = field(default_factory=lambda: [256, 1024])
    repeat: int = 3
    max_model_len: int = 4096
    kv_cache_gib: float | None = 1.0  # None: vLLM sizes it (GPUs)
    model_dir: str | None = None
    seed: int = 0
    uncached: bool = True  # also on an engine with prefix caching off


async def run_engine(
    cfg: ResumeConfig,
    infra: Infra,
    caching: bool,
    on_trial: Callable[[dict[str, Any]], None],
) -> list[dict[str, Any]]:
    """The trials on a fresh stack whose one engine has prefix caching on or off."""
    spec = VllmEngineSpec(
        model=cfg.model,
        max_batch=1,
        max_model_len=cfg.max_model_len,
        kv_cache_gib=cfg.kv_cache_gib,
        enable_prefix_caching=caching,
        model_dir=cfg.model_dir,
        delta_interval_s=0.0,  # every token as it comes: exact stream timing
    )
    settings = Settings(nats_url=infra.nats_url, database_url=infra.database_url)
    stack = Stack(
        settings,
        StackConfig(
            engines=[EngineConfig("vllm", 1, tuple(spec.engine_args()))],
            ephemeral=True,
            ready_timeout_s=420.0,
        ),
    )
    async with stack:
        vocab = spec.vocab_size or 4096
        return await trials(stack, cfg.sizes, cfg.repeat, vocab, cfg.seed, on_trial)


async def run_resume(
    cfg: ResumeConfig,
    *,
    nats_url: str | None = None,
    database_url: str | None = None,
    on_trial: Callable[[dict[str, Any]], None] = lambda _row: None,
) -> dict[str, Any]:
    """Caching on, then off (unless `cfg.uncached` is false); the resume.json payload."""
    load_start = load_avg()
    rows: list[dict[str, Any]] = []
    summary: list[dict[str, Any]] = []
    async with Infra(nats_url, database_url) as infra:
        for caching in (True, False) if cfg.uncached else (True,):
            got = await run_engine(cfg, infra, caching, on_trial)
            rows += [{**r, "prefix_caching": caching} for r in got]
            summary += summarize(got, caching)
    meta = {
        "model": cfg.model,
        "repeat": cfg.repeat,
        "load_start": load_start,
        "load_end": load_avg(),
        "command": command_line(),
    }
    return {"meta": meta, "summary": summary, "trials": rows}


def summarize(rows: list[dict[str, Any]], caching: bool) -> list[dict[str, Any]]:
    """Per prompt size: median and min resume, median stall and top-call run, and whether every
    victim got all 400 tokens with exactly one preemption."""
    out = []
    for size in sorted({r["prompt_tokens"] for r in rows}):
        rs = [r for r in rows if r["prompt_tokens"] == size and r["resume_s"] is not None]
        out.append(
            {
                "prefix_caching": caching,
                "prompt_tokens": size,
                "trials": len(rs),
                "resume_s_median": statistics.median(r["resume_s"] for r in rs),
                "resume_s_min": min(r["resume_s"] for r in rs),
                "stall_s_median": statistics.median(r["stall_s"] for r in rs),
                "top_run_s_median": statistics.median(r["top_run_s"] for r in rs),
                "all_exact": all(r["victim_tokens"] == 400 and r["preemptions"] == 1 for r in rs),
            }
        )
    return out


def markdown(payload: dict[str, Any]) -> str:
    """resume.md: what ran, then one row per (prompt size, prefix caching)."""
    meta = payload["meta"]
    header = [
        "prompt tokens",
        "prefix caching",
        "resume median (ms)",
        "resume min (ms)",
        "victim stall median (ms)",
        "top call run (ms)",
        "400 tokens, 1 preemption",
    ]
    rows = [
        [
            str(s["prompt_tokens"]),
            "on" if s["prefix_caching"] else "off",
            f"{s['resume_s_median'] * 1000:.0f}",
            f"{s['resume_s_min'] * 1000:.0f}",
            f"{s['stall_s_median'] * 1000:.0f}",
            f"{s['top_run_s_median'] * 1000:.0f}",
            "yes" if s["all_exact"] else "NO",
        ]
        for s in payload["summary"]
    ]
    lines = [
        "# Preemption resume cost through the stack (real vLLM engine)",
        "",
        f"{model_label({'model': meta['model']})}, batch 1, {meta['repeat']} trials per size; "
        "load average "
        f"{meta['load_start']:.1f} -> {meta['load_end']:.1f}. Command: `{meta['command']}`",
        "",
        *md_table_lines(header, rows),
    ]
    return "\n".join(lines) + "\n"


def write_resume(payload: dict[str, Any], out: Path) -> list[Path]:
    """resume.json and resume.md in `out`; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "resume.json", out / "resume.md"]
    paths[0].write_text(json.dumps(payload, indent=1) + "\n")
    paths[1].write_text(markdown(payload))
    return paths
