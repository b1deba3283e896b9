"""What constrained decoding (structured output) costs per token on the vLLM engine.

Run: `python -m autellix.bench.structured --out bench/structured` (options: `--help`).

The same engine (a dummy-weight preset with the offline tokenizer, so no download) generates
with and without a grammar, side by side in one run, each repeat in a rotated order so that a
slow spell of a shared machine falls on every mode alike:

* `unconstrained`: free sampling to `max_tokens` (EOS ignored);
* `json_string`: a JSON Schema whose one string field the model fills until `max_tokens` (the
  grammar mostly in its cheap in-string state);
* `json_enum_array`: a fixed-length array of enum words (the grammar in its structural states
  on every token).

Per request it records when each output chunk arrived; the figure is decode time per token
(`(last - first) / (tokens - 1)`, so the prompt's prefill and the grammar's compile are not in
it), for `--concurrency` requests at once. The first constrained request's latency, which
includes compiling the tokenizer's grammar tables, is reported on its own. Results are REAL
(vLLM), written as JSON and Markdown with the command that made them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from autellix.backends.base import GenerationRequest
from autellix.bench.reporting import machine, md_table
from autellix.wire.protocol import StructuredOutput

PROMPT = "what is the weather in paris"


def _modes(tokens: int) -> dict[str, StructuredOutput | None]:
    """The grammars compared; the enum array is sized to about `tokens` tokens (4 a word)."""
    words = max(1, (tokens - 2) // 4)
    return {
        "unconstrained": None,
        "json_string": StructuredOutput(
            json_schema={
                "type": "object",
                "properties": {"text": {"type": "string"}},
                "required": ["text"],
            }
        ),
        "json_enum_array": StructuredOutput(
            json_schema={
                "type": "array",
                "items": {"enum": ["water", "world", "people"]},
                "minItems": words,
                "maxItems": words,
            }
        ),
    }


async def _one(backend: Any, req: GenerationRequest) -> dict[str, float]:
    t0 = time.perf_counter()
    times: list[float] = []
    tokens = 0
    async for chunk in backend.generate(req):
        if chunk.token_ids:
            tokens += len(chunk.token_ids)
            times.append(time.perf_counter())
    first, last = (times[0], times[-1]) if times else (t0, t0)
    per_token = (last - first) / (tokens - 1) if tokens > 1 else float("nan")
    return {"tokens": tokens, "ttft_s": first - t0, "total_s": last - t0, "per_token_s": per_token}


async def _round(
    backend: Any,
    prompt: list[int],
    mode: str,
    grammar: StructuredOutput | None,
    args: Any,
    tag: str,
) -> dict[str, Any]:
    reqs = [
        GenerationRequest(
            request_id=f"{tag}-{mode}-{i}",
            prompt_token_ids=prompt,
            max_tokens=args.tokens,
            temperature=1.0,
            seed=i,
            ignore_eos=grammar is None,
            structured=grammar,
        )
        for i in range(args.concurrency)
    ]
    t0 = time.perf_counter()
    runs = await asyncio.gather(*(_one(backend, r) for r in reqs))
    wall = time.perf_counter() - t0
    tokens = sum(r["tokens"] for r in runs)
    return {
        "mode": mode,
        "tokens": tokens,
        "wall_s": wall,
        "tokens_per_s": tokens / wall if wall else 0.0,
        "per_token_ms": 1000.0 * statistics.mean(r["per_token_s"] for r in runs),
    }


async def run(args: Any) -> dict[str, Any]:
    from autellix.backends.vllm import VllmBackend, VllmBackendConfig

    cfg = VllmBackendConfig(
        model=f"dummy:{args.preset}",
        dummy_tokenizer=True,
        max_num_seqs=max(1, args.concurrency),
        max_model_len=2048,
        kv_cache_gib=args.kv_cache_gib,
        model_dir=args.model_dir,
    )
    backend = VllmBackend(cfg)
    await backend.start()
    try:
        prompt = backend.tokenize(PROMPT)
        modes = _modes(args.tokens)
        first_latency: dict[str, float] = {}
        for mode, grammar in modes.items():  # warm-up; the first grammar compiles its tables
            t0 = time.perf_counter()
            await _round(backend, prompt, mode, grammar, args, "warm")
            first_latency[mode] = time.perf_counter() - t0
        names = list(modes)
        rounds = []
        for rep in range(args.repeats):
            order = names[rep % len(names) :] + names[: rep % len(names)]
            for mode in order:
                row = await _round(backend, prompt, mode, modes[mode], args, f"r{rep}")
                rounds.append({"repeat": rep, **row})
    finally:
        await backend.stop()
    summary = {}
    for mode in names:
        rows = [r for r in rounds if r["mode"] == mode]
        per_token = [r["per_token_ms"] for r in rows]
        summary[mode] = {
            "per_token_ms_median": statistics.median(per_token),
            "per_token_ms_min": min(per_token),
            "per_token_ms_max": max(per_token),
            "tokens_per_s_median": statistics.median(r["tokens_per_s"] for r in rows),
            "mean_tokens": statistics.mean(r["tokens"] for r in rows) / args.concurrency,
            "first_request_s": first_latency[mode],
        }
    base = summary["unconstrained"]["per_token_ms_median"]
    for mode in names:
        summary[mode]["vs_unconstrained"] = summary[mode]["per_token_ms_median"] / base
    return {
        "meta": {
            "command": "python -m autellix.bench.structured " + " ".join(sys.argv[1:]),
            "machine": machine(),
            "engine": f"vllm dummy:{args.preset} (dummy weights, offline tokenizer), REAL",
            "concurrency": args.concurrency,
            "max_tokens": args.tokens,
            "repeats": args.repeats,
            "order": "rotated per repeat",
        },
        "summary": summary,
        "rounds": rounds,
    }


def markdown(result: dict[str, Any]) -> str:
    meta, summary = result["meta"], result["summary"]
    rows = [
        [
            mode,
            f"{s['per_token_ms_median']:.2f} "
            f"({s['per_token_ms_min']:.2f}-{s['per_token_ms_max']:.2f})",
            f"{s['vs_unconstrained']:.2f}x",
            f"{s['tokens_per_s_median']:.1f}",
            f"{s['mean_tokens']:.0f}",
            f"{s['first_request_s']:.1f}",
        ]
        for mode, s in summary.items()
    ]
    table = md_table(
        [
            "mode",
            "decode ms/token, median (min-max)",
            "vs unconstrained",
            "tokens/s",
            "tokens/request",
            "first request s",
        ],
        rows,
    )
    return (
        "# Constrained decoding cost on the vLLM engine (REAL)\n\n"
        f"Command: `{meta['command']}`\n\n"
        f"Machine: {meta['machine']}; engine: {meta['engine']}; {meta['concurrency']} requests "
        f"at once, max_tokens {meta['max_tokens']}, {meta['repeats']} repeats, {meta['order']}.\n\n"
        f"{table}\n\n"
        "Decode ms/token excludes prefill and the grammar compile; `first request s` is the "
        "warm-up request of each mode (for the first constrained mode it includes compiling the "
        "tokenizer's grammar tables).\n"
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("bench/structured"))
    p.add_argument("--preset", default="tiny", help="dummy model preset (tiny, bench)")
    p.add_argument("--tokens", type=int, default=128, help="max_tokens per request")
    p.add_argument("--concurrency", type=int, default=1, help="requests at once")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--kv-cache-gib", type=float, default=0.25)
    p.add_argument("--model-dir", default=None)
    args = p.parse_args(argv)
    result = asyncio.run(run(args))
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"structured-{args.preset}-c{args.concurrency}"
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / f"{stem}.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
