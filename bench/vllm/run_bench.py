"""Autellix vs plain vLLM on the REAL vLLM engine: a thin wrapper of `autellix bench live
--backend vllm` that keeps this script's flags and defaults (and its outputs: results.json,
results.md, latency.png in --out).

    python bench/vllm/run_bench.py --workload mixed --programs 60 --rates 0.5,1.0 \\
        --policies vllm-fcfs,vllm-priority,plas,atlas --model dummy:bench --max-batch 16 \\
        --out bench/vllm

is the same as

    autellix bench live --backend vllm --workload mixed --programs 60 --rates 0.5,1.0 \\
        --policies vllm-fcfs,vllm-priority,plas,atlas --model dummy:bench --max-batch 16 \\
        --call-timeout 1800 --out bench/vllm

The benchmark itself lives in `autellix.livebench.vllm_suite` (see bench/vllm/README.md).
"""

from __future__ import annotations

import argparse
import sys

from autellix.cli import build_app


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workload", default="mixed")
    ap.add_argument("--programs", type=int, default=60)
    ap.add_argument("--rates", default="0.5,1.0", help="'' to probe capacity (30/80/120%%)")
    ap.add_argument("--policies", default="vllm-fcfs,vllm-priority,plas,atlas")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default="dummy:bench")
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--max-model-len", type=int, default=4096)
    ap.add_argument("--kv-cache-gib", type=float, default=1.0)
    ap.add_argument("--load-format", default="auto")
    ap.add_argument("--model-dir", default=None)
    ap.add_argument("--queue-ahead", type=int, default=0)
    ap.add_argument("--nice", type=int, default=None)
    ap.add_argument("--workload-option", action="append", help="WorkloadOptions KEY=JSON")
    ap.add_argument("--nats-url", default=None)
    ap.add_argument("--database-url", default=None)
    ap.add_argument("--call-timeout", type=float, default=1800.0)
    ap.add_argument("--log-dir", default=None)
    ap.add_argument("--out", default="bench/vllm")
    return ap.parse_args(argv)


def cli_args(ns: argparse.Namespace) -> list[str]:
    """The `autellix bench live --backend vllm` arguments these flags stand for."""
    args = ["bench", "live", "--backend", "vllm"]
    for flag in (
        "workload", "programs", "policies", "seed", "model", "max_batch", "max_model_len",
        "kv_cache_gib", "load_format", "model_dir", "queue_ahead", "nice", "nats_url",
        "database_url", "call_timeout", "log_dir", "out",
    ):  # fmt: skip
        value = getattr(ns, flag)
        if value is not None:
            args += ["--" + flag.replace("_", "-"), str(value)]
    if ns.rates:
        args += ["--rates", ns.rates]
    for item in ns.workload_option or []:
        args += ["--workload-option", item]
    return args


if __name__ == "__main__":
    argv = cli_args(parse())
    print("autellix " + " ".join(argv), flush=True)
    sys.exit(build_app()(argv, prog_name="autellix"))
