"""`python -m autellix.services.scheduler`: one scheduler replica (run as many as you like)."""

from __future__ import annotations

from typing import Annotated

import typer

from autellix.runtime.options import ConcurrencyOpt, DatabaseUrlOpt, NamespaceOpt, NatsUrlOpt
from autellix.runtime.service import resolve_settings

app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    nats_url: NatsUrlOpt = None,
    database_url: DatabaseUrlOpt = None,
    namespace: NamespaceOpt = None,
    replica: Annotated[str | None, typer.Option(help="name in logs and call events")] = None,
    concurrency: ConcurrencyOpt = 512,
    ack_wait: Annotated[
        float,
        typer.Option(
            help="seconds before an unacked call is redelivered (a killed replica's calls "
            "wait this long)"
        ),
    ] = 3.0,
    no_engine_timeout: Annotated[
        float, typer.Option(help="fail a call with no_engine after this many seconds")
    ] = 60.0,
    retry_delay: Annotated[float, typer.Option(help="seconds between no-engine retries")] = 0.5,
    engine_live: Annotated[
        float, typer.Option(help="heartbeat age after which no new calls go to an engine")
    ] = 3.0,
    engine_stale: Annotated[
        float, typer.Option(help="heartbeat age after which an engine's calls are re-dispatched")
    ] = 5.0,
    maintenance_interval: Annotated[
        float, typer.Option(help="seconds between reaper passes")
    ] = 1.0,
    reconcile_after: Annotated[
        float, typer.Option(help="republish calls queued without activity this long")
    ] = 30.0,
    batch: Annotated[
        int, typer.Option(min=1, help="most ScheduleCalls decided in one batch")
    ] = 256,
    policy: Annotated[
        str,
        typer.Option(
            envvar="AUTELLIX_POLICY",
            help="fcfs | fcfs-nocache | mlfq | plas | plas-np | atlas | atlas-exact | gittins "
            "(docs/scheduling.md)",
        ),
    ] = "atlas",
    quantum: Annotated[
        float | None,
        typer.Option(envvar="AUTELLIX_QUANTUM", help="first MLFQ quantum, service units [64]"),
    ] = None,
    levels: Annotated[
        int | None, typer.Option(envvar="AUTELLIX_LEVELS", help="number of MLFQ queues [9]")
    ] = None,
    growth: Annotated[
        float | None,
        typer.Option(envvar="AUTELLIX_GROWTH", help="quantum growth factor per queue [2]"),
    ] = None,
    beta: Annotated[
        str | None,
        typer.Option(
            envvar="AUTELLIX_BETA",
            help="anti-starvation threshold, or 'none' [the policy's: 10 for plas/atlas]",
        ),
    ] = None,
    age_s: Annotated[
        str | None,
        typer.Option(
            envvar="AUTELLIX_AGE_S",
            help="promote every call of programs older than this (s), or 'none' [none]",
        ),
    ] = None,
    slowdown: Annotated[
        float | None,
        typer.Option(
            envvar="AUTELLIX_SLOWDOWN",
            min=1.0,
            help="tail guard: promote every call of programs whose age reaches this many "
            "times their run time (floor 1 s) [off]",
        ),
    ] = None,
    within_level: Annotated[
        str | None,
        typer.Option(envvar="AUTELLIX_WITHIN_LEVEL", help="order in a queue: call | program"),
    ] = None,
    min_run_tokens: Annotated[
        int | None,
        typer.Option(
            envvar="AUTELLIX_MIN_RUN_TOKENS", help="runs younger than this are not preempted"
        ),
    ] = None,
    prefill_weight: Annotated[
        float | None,
        typer.Option(
            envvar="AUTELLIX_PREFILL_WEIGHT", help="service units per computed prompt token [0]"
        ),
    ] = None,
    balancer: Annotated[
        str,
        typer.Option(envvar="AUTELLIX_BALANCER", help="locality | least-loaded | round-robin"),
    ] = "locality",
    short_prompt_tokens: Annotated[
        int, typer.Option(help="locality: prompts up to this go to the least-loaded engine")
    ] = 2048,
    guard_abs: Annotated[
        str, typer.Option(help="locality guard: max-min load above this ... ('none': off)")
    ] = "64",
    guard_ratio: Annotated[float, typer.Option(help="... and max > this x min")] = 1.5,
    fold_interval: Annotated[
        float, typer.Option(help="seconds between folds of service reports")
    ] = 0.05,
    starvation_interval: Annotated[
        float, typer.Option(help="seconds between anti-starvation passes")
    ] = 0.5,
    program_idle_ttl: Annotated[
        float,
        typer.Option(
            envvar="AUTELLIX_PROGRAM_IDLE_TTL",
            help="expire programs idle this long (s); 0 = never",
        ),
    ] = 600.0,
) -> None:
    """Dispatch accepted calls to engines by a scheduling policy, reap lost engines."""
    from autellix.services.scheduler.decide import LivePolicy
    from autellix.services.scheduler.service import SchedulerOptions, run

    try:
        live_policy = LivePolicy.build(
            policy,
            quantum=quantum,
            levels=levels,
            growth=growth,
            beta=_optional_float(beta, "beta"),
            age_s=_optional_float(age_s, "age-s"),
            slowdown=slowdown,
            within_level=within_level,
            min_run_tokens=min_run_tokens,
            prefill_weight=prefill_weight,
            balancer=balancer,
            short_prompt_tokens=short_prompt_tokens,
            guard_abs=_optional_float(guard_abs, "guard-abs", none_default=False),  # type: ignore[arg-type]
            guard_ratio=guard_ratio,
        )
    except (ValueError, TypeError, KeyError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    settings = resolve_settings(nats_url, database_url, namespace)
    options = SchedulerOptions(
        concurrency=concurrency,
        ack_wait_s=ack_wait,
        no_engine_timeout_s=no_engine_timeout,
        retry_delay_s=retry_delay,
        engine_live_s=engine_live,
        engine_stale_s=engine_stale,
        maintenance_interval_s=maintenance_interval,
        reconcile_after_s=reconcile_after,
        replica=replica,
        batch=batch,
        policy=live_policy,
        fold_interval_s=fold_interval,
        starvation_interval_s=starvation_interval,
        program_idle_ttl_s=program_idle_ttl,
    )
    run(settings, options)


def _optional_float(value: str | None, name: str, none_default: bool = True) -> object:
    """'none'/'off' → None; a number → float; not given → "default" (the policy's value)."""
    if value is None:
        return "default" if none_default else None
    if value.strip().lower() in ("none", "off", ""):
        return None
    try:
        return float(value)
    except ValueError:
        raise typer.BadParameter(f"--{name} expects a number or 'none', got {value!r}") from None


if __name__ == "__main__":
    app()
