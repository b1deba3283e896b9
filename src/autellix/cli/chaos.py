"""`autellix chaos`: kill every part of a stack under load, fuzz it, write what happened.

Without `--nats-url` it starts a stack of its own (as `autellix up` does: services as processes,
embedded NATS with a JetStream file store and embedded Postgres, restarted when they crash) with
2 engines and 2 scheduler replicas, keeps streamed multi-call programs running through the
Python client, and SIGKILLs one part at a time (`--faults`); `DIR/chaos.json` gets `faults`:
`{fault, accepted, completed, failed_explicitly, lost, duplicated, recovery_s}` each
(`autellix.bench.chaos`), `fuzz: {cases, crashes, internal_errors}` (hostile messages on every
NATS subject, `autellix.bench.chaos_fuzz`) and, with `--soak-minutes`, each service's RSS over
time; chaos.md and chaos.png show the same. Exit 1 when a call was lost or duplicated or the
fuzz found something.

With `--nats-url` (and `--namespace`) it only fuzzes that running stack: its processes are not
this command's to kill.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from autellix.cli.common import NamespaceOpt, NatsUrlOpt


def require_fuzz_dependencies() -> None:
    """Refuse at once, not after the faults and the soak, when the fuzz cannot run: it draws
    its cases with Hypothesis, which the test extra brings, not a plain install."""
    import importlib.util

    if importlib.util.find_spec("hypothesis") is None:
        raise typer.BadParameter(
            "the fuzz draws its cases with Hypothesis, which is not installed: "
            "pip install 'autellix[test]', or pass --fuzz-cases 0",
            param_hint="--fuzz-cases",
        )


async def _any_engine(nc: Any, subjects: Any, wait_s: float) -> str | None:
    """The id of the first engine heard heartbeating within `wait_s` (None: none heard)."""
    from autellix.wire.protocol import heartbeats_in

    found: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def on_beat(msg: Any) -> None:
        if not found.done():
            found.set_result(heartbeats_in(msg.data)[0].engine_id)

    sub = await nc.subscribe(subjects.heartbeat, cb=on_beat)
    try:
        return await asyncio.wait_for(found, wait_s)
    except TimeoutError:
        return None
    finally:
        await sub.unsubscribe()


async def _run(
    nats_url: str,
    namespace: str,
    engine_id: str | None,
    cases: int,
    seed: int | None,
    timeout_s: float,
) -> dict[str, Any]:
    import nats

    from autellix.bench.chaos_fuzz import fuzz, still_serving
    from autellix.wire.protocol import Subjects

    subjects = Subjects(namespace)
    nc = await nats.connect(nats_url, connect_timeout=5)
    try:
        engine = engine_id or await _any_engine(nc, subjects, wait_s=5.0)
        if engine is None:
            raise typer.BadParameter("no engine heartbeat heard in 5 s: pass --engine-id")
        report = await fuzz(nc, subjects, engine, cases, rng_seed=seed, timeout_s=timeout_s)
        broken = await still_serving(nc, subjects, timeout_s=timeout_s)
    finally:
        await nc.close()
    return {
        "fuzz": report.summary(),
        "fuzz_per_subject": report.per_subject,
        "fuzz_failures": report.failures,
        "still_serving": not broken,
        "not_serving": broken,
        "engine_id": engine,
    }


def chaos(
    out: Annotated[Path, typer.Option("--out", help="directory for chaos.json/.md/.png")],
    programs: Annotated[
        int, typer.Option("--programs", min=1, help="programs running at once (own stack)")
    ] = 8,
    fuzz_cases: Annotated[
        int, typer.Option("--fuzz-cases", min=0, help="fuzz cases, spread over every subject")
    ] = 1000,
    soak_minutes: Annotated[
        float, typer.Option("--soak-minutes", min=0.0, help="load without faults, RSS sampled")
    ] = 0.0,
    faults: Annotated[
        str,
        typer.Option(help="parts to SIGKILL, in order: engine,scheduler,frontend,nats,postgres"),
    ] = "engine,scheduler,frontend,nats,postgres",
    pre_s: Annotated[
        float, typer.Option("--pre-s", min=1.0, help="steady load observed before each kill")
    ] = 8.0,
    post_s: Annotated[
        float, typer.Option("--post-s", min=5.0, help="seconds observed after each kill")
    ] = 20.0,
    call_timeout: Annotated[
        float, typer.Option(min=5.0, help="a call's deadline; unanswered after it = lost")
    ] = 60.0,
    log_dir: Annotated[
        Path | None,
        typer.Option(help="keep the services' logs and supervisor.log here (default: deleted)"),
    ] = None,
    scheduler_arg: Annotated[
        list[str] | None,
        typer.Option(help="extra flag for every scheduler replica (repeat)"),
    ] = None,
    nats_url: NatsUrlOpt = None,
    namespace: NamespaceOpt = None,
    engine_id: Annotated[
        str | None,
        typer.Option(
            help="engine whose direct, control and queue subjects to fuzz (default: the "
            "first one heard)"
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Hypothesis seed (default: random)")] = None,
    timeout: Annotated[
        float,
        typer.Option(
            min=1.0,
            help="seconds a case may take to be answered; above the scheduler's "
            "--no-engine-timeout, which answers calls for a model no engine serves",
        ),
    ] = 90.0,
) -> None:
    """Kill each part of a stack of its own under load and fuzz it (or, with --nats-url, fuzz
    that stack); write DIR/chaos.json, chaos.md, chaos.png (exit 1 on a lost or duplicated call
    or a fuzz finding)."""
    if fuzz_cases > 0:
        require_fuzz_dependencies()
    if not nats_url:
        _own_stack(
            out,
            programs=programs,
            fuzz_cases=fuzz_cases,
            soak_minutes=soak_minutes,
            faults=faults,
            pre_s=pre_s,
            post_s=post_s,
            call_timeout=call_timeout,
            scheduler_args=tuple(scheduler_arg or ()),
            seed=seed or 0,
            log_dir=log_dir,
        )
        return
    if fuzz_cases < 1:
        raise typer.BadParameter("--fuzz-cases must be at least 1 with --nats-url")
    result = asyncio.run(
        _run(nats_url, namespace or "autellix", engine_id, fuzz_cases, seed, timeout)
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "chaos.json").write_text(json.dumps(result, indent=2) + "\n")
    fz = result["fuzz"]
    typer.echo(
        f"fuzz: {fz['cases']} cases, {fz['crashes']} crashes, {fz['internal_errors']} internal "
        f"errors; still serving: {result['still_serving']} -> {out / 'chaos.json'}"
    )
    if fz["crashes"] or fz["internal_errors"] or not result["still_serving"]:
        raise typer.Exit(1)


def _own_stack(
    out: Path,
    *,
    programs: int,
    fuzz_cases: int,
    soak_minutes: float,
    faults: str,
    pre_s: float,
    post_s: float,
    call_timeout: float,
    scheduler_args: tuple[str, ...],
    seed: int,
    log_dir: Path | None,
) -> None:
    from rich.console import Console

    from autellix.bench.chaos.faults import FAULTS
    from autellix.bench.chaos.report import misses, write_outputs
    from autellix.bench.chaos.run import ChaosConfig, run_chaos
    from autellix.bench.reporting import command_line
    from autellix.cli.common import progress_bar

    chosen = tuple(f.strip() for f in faults.split(",") if f.strip())
    unknown = [f for f in chosen if f not in FAULTS]
    if unknown:
        raise typer.BadParameter(f"unknown fault(s) {unknown}; choose from {sorted(FAULTS)}")
    cfg = ChaosConfig(
        programs=programs,
        faults=chosen,
        pre_s=pre_s,
        post_s=post_s,
        soak_minutes=soak_minutes,
        fuzz_cases=fuzz_cases,
        call_timeout_s=call_timeout,
        scheduler_args=scheduler_args,
        seed=seed,
        log_dir=log_dir,
    )
    steps = 3 + len(chosen) * 3 + (1 if soak_minutes else 0) + (1 if fuzz_cases else 0)
    console = Console(stderr=True)
    with progress_bar(console) as bar:
        task = bar.add_task("chaos", total=steps)
        last = [""]

        def say(msg: str) -> None:
            if not msg.startswith("soak ") or not last[0].startswith("soak "):
                bar.advance(task)
            last[0] = msg
            bar.update(task, description=msg)

        # nats-py logs every failed reconnect with a traceback: outages are the point here
        logging.getLogger("nats.aio.client").setLevel(logging.CRITICAL)
        result = asyncio.run(run_chaos(cfg, say))
        bar.update(task, completed=steps, description="done")
    paths = write_outputs(out, result, command_line())
    for f in result["faults"]:
        typer.echo(
            f"{f['fault']}: accepted {f['accepted']}, completed {f['completed']}, failed "
            f"explicitly {f['failed_explicitly']}, lost {f['lost']}, duplicated "
            f"{f['duplicated']}, recovery {f['recovery_s']} s"
        )
    if result["fuzz"] is not None:
        fz = result["fuzz"]
        typer.echo(
            f"fuzz: {fz['cases']} cases, {fz['crashes']} crashes, "
            f"{fz['internal_errors']} internal errors"
        )
    missed = misses(result)
    for m in missed:
        typer.echo(f"goal missed: {m}")
    typer.echo(f"-> {paths['json']}, {paths['md']}, {paths['png']}")
    if any("lost" in m or "duplicated" in m or "fuzz" in m or "serving" in m for m in missed):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("chaos")(chaos)
