"""What a preemption costs through the whole stack on the real vLLM engine (issue 6).

    python bench/vllm_probe_resume.py --model dummy:bench --sizes 256,1024,2048 --repeat 3 \
        --out bench/vllm/resume

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
the difference is what prefix caching saves on every preemption.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import nats

from autellix.livebench.plain_vllm import VllmEngineSpec
from autellix.protocol import (
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
from autellix.settings import Settings
from autellix.stack import EngineConfig, Stack, StackConfig


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
    stack: Stack, sizes: list[int], repeat: int, vocab: int, seed: int
) -> list[dict[str, Any]]:
    nc = await nats.connect(stack.settings.nats_url)
    rec = Recorder(nc, stack.subjects.submit)
    await rec.start()
    engine = stack.engine_ids[0]
    rng = random.Random(seed)
    out = []
    greedy = {"temperature": 0.0, "ignore_eos": True}
    try:
        for size in sizes:
            for i in range(repeat):
                prompt = [rng.randrange(100, vocab) for _ in range(size)]
                victim = await rec.submit(
                    CallRequest(
                        program_id=f"victim-{size}-{i}",
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
                        program_id=f"top-{size}-{i}",
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
                print(json.dumps(row), flush=True)
                out.append(row)
    finally:
        await nc.close()
    return out


async def run(ns: argparse.Namespace, caching: bool) -> list[dict[str, Any]]:
    spec = VllmEngineSpec(
        model=ns.model,
        max_batch=1,
        max_model_len=ns.max_model_len,
        kv_cache_gib=ns.kv_cache_gib,
        enable_prefix_caching=caching,
        model_dir=ns.model_dir,
        delta_interval_s=0.0,  # every token as it comes: exact stream timing
    )
    settings = Settings(nats_url=ns.nats_url, database_url=ns.database_url)
    stack = Stack(
        settings,
        StackConfig(
            engines=[EngineConfig("vllm", 1, tuple(spec.engine_args()))],
            ephemeral=True,
            ready_timeout_s=420.0,
        ),
    )
    async with stack:
        return await trials(stack, ns.sizes, ns.repeat, spec.vocab_size or 4096, ns.seed)


def summarize(rows: list[dict[str, Any]], caching: bool) -> list[dict[str, Any]]:
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


def markdown(summary: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        "# Preemption resume cost through the stack (real vLLM engine, CPU)",
        "",
        f"Model `{meta['model']}` (dummy weights), batch 1, {meta['repeat']} trials per size; "
        f"load average {meta['load_start']:.1f} -> {meta['load_end']:.1f}. Command: "
        f"`{meta['command']}`",
        "",
        "| prompt tokens | prefix caching | resume median (ms) | resume min (ms) | "
        "victim stall median (ms) | top call run (ms) | 400 tokens, 1 preemption |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        lines.append(
            f"| {s['prompt_tokens']} | {'on' if s['prefix_caching'] else 'off'} | "
            f"{s['resume_s_median'] * 1000:.0f} | {s['resume_s_min'] * 1000:.0f} | "
            f"{s['stall_s_median'] * 1000:.0f} | {s['top_run_s_median'] * 1000:.0f} | "
            f"{'yes' if s['all_exact'] else 'NO'} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    import os

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="dummy:bench")
    ap.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[256, 1024])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--max-model-len", type=int, default=4096)
    ap.add_argument("--kv-cache-gib", type=float, default=1.0)
    ap.add_argument("--model-dir", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--nats-url", default=None)
    ap.add_argument("--database-url", default=None)
    ap.add_argument("--no-uncached", action="store_true", help="skip the caching-off engine")
    ap.add_argument("--out", default="bench/vllm/resume")
    ns = ap.parse_args()
    load_start = os.getloadavg()[0]
    rows: list[dict[str, Any]] = []
    summary: list[dict[str, Any]] = []
    for caching in (True,) if ns.no_uncached else (True, False):
        got = asyncio.run(run(ns, caching))
        rows += [{**r, "prefix_caching": caching} for r in got]
        summary += summarize(got, caching)
    meta = {
        "model": ns.model,
        "repeat": ns.repeat,
        "load_start": load_start,
        "load_end": os.getloadavg()[0],
        "command": "python " + " ".join(sys.argv),
    }
    out = Path(ns.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "resume.json").write_text(
        json.dumps({"meta": meta, "summary": summary, "trials": rows}, indent=1) + "\n"
    )
    (out / "resume.md").write_text(markdown(summary, meta))
    print(markdown(summary, meta))


if __name__ == "__main__":
    main()
