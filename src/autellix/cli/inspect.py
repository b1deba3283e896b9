"""`autellix calls explain` and `autellix programs show`: why a call ran when and where it did.

Every scheduling decision writes a `call_events` row (dispatch with the policy's value, level and
engine choice; demote at a quantum; promote by the anti-starvation rule; preempt naming the call
it made room for; requeue after an engine loss; finish / fail). These commands print that history
straight from Postgres, so they work against any running deployment (read-only).
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Annotated, Any

import typer

from autellix.bench.reporting import fmt_s

DatabaseUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="AUTELLIX_DATABASE_URL",
        help="Postgres URL of the deployment (the one `autellix up` printed).",
    ),
]

calls_app = typer.Typer(help="Inspect calls: their scheduling history.", no_args_is_help=True)
programs_app = typer.Typer(help="Inspect programs: service, waiting, calls.", no_args_is_help=True)


def _require(url: str | None) -> str:
    from autellix.cli.common import stack_database_url

    url = stack_database_url(url)  # none given: the running `autellix up` stack's
    if not url:
        typer.echo(
            "error: no database URL; pass --database-url, set AUTELLIX_DATABASE_URL "
            "or start a stack with `autellix up`",
            err=True,
        )
        raise typer.Exit(2)
    return url


async def _with_conn(url: str, fn: Any) -> Any:
    from autellix.store.db import connect

    conn = await connect(url, application_name="autellix-inspect")
    try:
        return await fn(conn)
    finally:
        await conn.close()


def _num(x: Any, fmt: str = "{:g}") -> str:
    return "" if x is None else fmt.format(x)


def _secs(a: datetime | None, b: datetime | None) -> str:
    """The time from `a` to `b` with its unit ("12 ms", "1.23 s"); empty when either is unset."""
    return "" if a is None or b is None else fmt_s((b - a).total_seconds())


def _dur(seconds: float | None) -> str:
    return "" if seconds is None else fmt_s(seconds)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, datetime):
        return obj.isoformat()
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    return obj


def _labels(request: Any) -> str:
    """The class and size hint a call carried (its metadata's `autellix.class`/`autellix.hint`;
    the gittins policy ranks by them, its dispatch reason shows the index read from them)."""
    from autellix.store.gittins import CLASS_KEY, HINT_KEY

    if isinstance(request, str):
        try:
            request = json.loads(request)
        except ValueError:
            request = None
    meta = (request or {}).get("metadata") or {} if isinstance(request, dict) else {}
    return f"{meta.get(CLASS_KEY) or '-'} / {meta.get(HINT_KEY) or '-'}"


@calls_app.command("explain")
def explain(
    call_id: str = typer.Argument(help="call id (a unique prefix is enough)"),
    database_url: DatabaseUrlOpt = None,
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
) -> None:
    """Print a call's life: level over time, engines, and why (one line per decision)."""
    from autellix.store.inspect import call_events, call_record, find_calls

    url = _require(database_url)

    async def load(conn: Any) -> tuple[dict[str, Any] | None, list[dict[str, Any]], list[str]]:
        ids = [call_id] if await call_record(conn, call_id) else await find_calls(conn, call_id)
        if len(ids) != 1:
            return None, [], ids
        return await call_record(conn, ids[0]), await call_events(conn, ids[0]), ids

    record, events, matches = asyncio.run(_with_conn(url, load))
    if record is None:
        if matches:
            typer.echo(f"ambiguous call id prefix {call_id!r}: {', '.join(matches)}", err=True)
        else:
            typer.echo(f"no call {call_id!r}", err=True)
        raise typer.Exit(1)
    if as_json:
        slim = {
            k: v
            for k, v in record.items()
            if k not in ("request", "output_token_ids", "output_logprobs")
        }
        typer.echo(json.dumps(_jsonable({"call": slim, "events": events}), indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    acc = record["accepted_at"]
    summary = Table(title=f"call {record['id']}", show_header=False, title_justify="left")
    summary.add_column(style="bold cyan")
    summary.add_column()
    for what, value in (
        ("program / thread", f"{record['program_id']} / {record['thread_id']}"),
        (
            "status",
            f"{record['status']}"
            + (f" ({record['finish_reason']})" * bool(record.get("finish_reason"))),
        ),
        (
            "level now",
            f"{record['level']}" + (" (aged: sticky top queue)" if record["aged"] else ""),
        ),
        ("engine", f"{record['engine_id'] or '-'} ({record.get('engine_backend') or '?'})"),
        (
            "base / service / value",
            f"{record['priority']:g} / {record['service']:g} / "
            f"{record['rank_base'] + record['service']:g}",
        ),
        (
            "tokens",
            f"prompt {record['prompt_tokens'] or 0}, completion "
            f"{record['completion_tokens']}, cached {record['cached_tokens']}",
        ),
        ("class / hint (gittins)", _labels(record.get("request"))),
        ("preemptions / dispatches", f"{record['preemptions']} / {record['attempts']}"),
        ("queued / run", f"{_dur(record['queue_s'])} / {_dur(record['run_s'])}"),
        ("finished after", _secs(acc, record["finished_at"])),
    ):
        summary.add_row(what, value)
    console.print(summary)
    table = Table(title="decisions (t = time since accepted)", title_justify="left")
    for col in ("t", "event", "level", "engine", "value", "by", "why"):
        table.add_column(col, overflow="fold")
    for e in events:
        table.add_row(
            _secs(acc, e["at"]),
            e["kind"],
            _num(e["level"]),
            e["engine_id"] or "",
            _num(e["value"]),
            e["actor"] or "",
            (e["reason"] or "")
            + (f" [other call {e['other_call_id']}]" if e["other_call_id"] else ""),
        )
    console.print(table)


def prefix_cache_summary(calls: list[dict[str, Any]]) -> dict[str, Any]:
    """Prompt tokens of a program's calls the engines served from their prefix cache: what
    shows data locality working (a program kept on the engine that holds its context hits; one
    moved elsewhere recomputes). Each call counts its first run's hit on its own prompt, recorded
    when it finishes (a call still running counts its prompt but no hits yet); what a preempted
    call re-prefills when it resumes is in its service, not here."""
    prompt = sum(c.get("prompt_tokens") or 0 for c in calls)
    cached = sum(c.get("cached_tokens") or 0 for c in calls)
    return {
        "prompt_tokens": prompt,
        "cached_tokens": cached,
        "hit_rate": cached / prompt if prompt else None,
    }


@programs_app.command("show")
def show(
    program_id: str = typer.Argument(help="program id"),
    database_url: DatabaseUrlOpt = None,
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of tables"),
) -> None:
    """Print a program's row (service, waiting, engine pin, status) and its calls."""
    from autellix.store.inspect import program_calls, program_record

    url = _require(database_url)

    async def load(conn: Any) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        return await program_record(conn, program_id), await program_calls(conn, program_id)

    program, calls = asyncio.run(_with_conn(url, load))
    if program is None:
        typer.echo(f"no program {program_id!r}", err=True)
        raise typer.Exit(1)
    cache = prefix_cache_summary(calls)
    if as_json:
        typer.echo(
            json.dumps(
                _jsonable({"program": program, "prefix_cache": cache, "calls": calls}), indent=2
            )
        )
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    summary = Table(title=f"program {program['id']}", show_header=False, title_justify="left")
    summary.add_column(style="bold cyan")
    summary.add_column()
    for what, value in (
        (
            "status",
            program["status"]
            + (f" at {program['closed_at']:%H:%M:%S}" if program["closed_at"] else ""),
        ),
        ("calls (finished / total)", f"{program['calls_finished']} / {len(calls)}"),
        ("attained service (live)", f"{program['attained']:g}"),
        ("completed service (PLAS)", f"{program['total_service']:g}"),
        ("critical path (ATLAS)", f"{program['service']:g}"),
        ("waiting / run", f"{_dur(program['waiting_s'])} / {_dur(program['run_s'])}"),
        (
            "anti-starvation W_p / T_p",
            f"{_dur(program['starve_wait_s'])} / {_dur(program['starve_run_s'])}",
        ),
        (
            "tokens (prompt / completion)",
            f"{program['prompt_tokens']} / {program['completion_tokens']}",
        ),
        (
            "prefix cache (cached / prompt tokens of its calls)",
            f"{cache['cached_tokens']} / {cache['prompt_tokens']}"
            + (f" ({cache['hit_rate']:.0%})" if cache["hit_rate"] is not None else ""),
        ),
        ("engine pin", program["engine_affinity"] or "-"),
    ):
        summary.add_row(what, value)
    console.print(summary)
    console.print(calls_table(calls))


def calls_table(calls: list[dict[str, Any]]) -> Any:
    """A program's calls, one line each in a 100-column terminal: short headings (explained in
    the caption), times with units, the call id never folded (it is what `autellix calls
    explain` takes). When every call ran on one engine (a program pinned to its engine, the
    usual case) the engine is named once in the title instead of on every line."""
    from rich import box
    from rich.table import Table

    engines = {c["engine_id"] for c in calls}
    (single,) = engines if len(engines) == 1 else (None,)
    table = Table(
        title="calls" + (f" (all on engine {single})" if single else ""),
        caption="lvl: level now, * = aged; pre/mv: preemptions / moves to another engine; "
        "cached: prompt tokens served from the prefix cache",
        title_justify="left",
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        collapse_padding=True,
        pad_edge=False,
    )
    columns = ["call", "thread", "status", "lvl", *([] if single else ["engine"])]
    columns += ["service", "pre/mv", "cached", "queued", "total"]
    for col in columns:
        left = col in ("call", "thread", "status", "engine")
        table.add_column(col, no_wrap=col == "call", justify="left" if left else "right")
    for c in calls:
        table.add_row(
            c["id"],
            c["thread_id"],
            c["status"],
            str(c["level"]) + ("*" if c["aged"] else ""),
            *([] if single else [c["engine_id"] or ""]),
            f"{c['service']:g}",
            f"{c['preemptions']}/{c['moves']}",
            f"{c['cached_tokens'] or 0}/{c['prompt_tokens'] or 0}",
            _secs(c["accepted_at"], c["started_at"]),
            _secs(c["accepted_at"], c["finished_at"]),
        )
    return table


def register(app: typer.Typer) -> None:
    app.add_typer(calls_app, name="calls")
    app.add_typer(programs_app, name="programs")
