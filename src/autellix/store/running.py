"""The engine's side of a call while it owns it: started, preempted, tokens saved.

Every statement names the attempt and engine it expects, so a zombie engine (its calls were
re-dispatched meanwhile) changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from autellix.store.db import Conn
from autellix.store.states import ACTIVE


async def mark_running(
    conn: Conn, *, call_id: str, attempts: int, engine_id: str, prompt_tokens: int
) -> bool:
    """dispatched | preempted → running, only while this engine owns this attempt."""
    got = await conn.fetchval(
        """UPDATE calls SET status = 'running', started_at = COALESCE(started_at, now()),
                            prompt_tokens = $4
           WHERE id = $1 AND attempts = $2 AND engine_id = $3
             AND status IN ('dispatched', 'preempted')
           RETURNING id""",
        call_id,
        attempts,
        engine_id,
        prompt_tokens,
    )
    return got is not None


async def mark_running_many(
    conn: Conn, engine_id: str, items: Sequence[tuple[str, int, int, float]]
) -> set[str]:
    """`mark_running` for many calls in one statement: (call_id, attempts, prompt_tokens,
    started_ago_s) each. Returns the ids this engine owns (those it moved to running).

    Why: the engine records starts in batches, off the critical path (see the engine runner's
    `_start_writer`), so a call's generation does not wait for this round trip and N calls that
    start together cost one statement. `started_at` is the database clock minus how long ago the
    engine started the segment, so it is not skewed by the batching delay. Call rows are locked
    in id order (as `fold_progress` does), so concurrent batches cannot deadlock.
    """
    if not items:
        return set()
    rows = await conn.fetch(
        """WITH d AS (
               SELECT * FROM unnest($1::text[], $2::int[], $3::int[], $4::float8[])
                   AS d(id, attempt, prompt_tokens, ago)),
           l AS (
               SELECT c.id FROM calls c JOIN d ON d.id = c.id
               WHERE c.attempts = d.attempt AND c.engine_id = $5
                 AND c.status IN ('dispatched', 'preempted')
               ORDER BY c.id FOR UPDATE OF c)
           UPDATE calls c SET status = 'running',
               started_at = COALESCE(c.started_at, now() - make_interval(secs => d.ago)),
               prompt_tokens = d.prompt_tokens
           FROM l JOIN d ON d.id = l.id
           WHERE c.id = l.id AND c.status IN ('dispatched', 'preempted')
           RETURNING c.id""",
        [i[0] for i in items],
        [i[1] for i in items],
        [i[2] for i in items],
        [max(0.0, float(i[3])) for i in items],
        engine_id,
    )
    return {r["id"] for r in rows}


async def mark_preempted(
    conn: Conn,
    *,
    call_id: str,
    attempts: int,
    engine_id: str,
    output_token_ids: list[int],
    level: int,
    reason: str,
    service: float | None = None,
    run_s: float | None = None,
    other_call_id: str | None = None,
    output_logprobs: str | None = None,
) -> bool:
    """running → preempted with the tokens streamed so far (it resumes from them), its run
    time, and a `preempt` event naming the call it made room for. `level` is the engine's level
    for it (recorded in the event); `calls.level` stays the schedulers' field. `service` is only
    recorded in the event: the call's service column moves through `fold_progress` (the engine
    reports a preempted call's progress at once), so program and thread totals follow it."""
    got = await conn.fetchval(
        """WITH upd AS (
               UPDATE calls SET status = 'preempted', preemptions = preemptions + 1,
                                output_token_ids = $4, completion_tokens = cardinality($4::int[]),
                                output_logprobs = $10::text::json,
                                run_s = GREATEST(COALESCE(run_s, 0), COALESCE($8, 0))
               WHERE id = $1 AND attempts = $2 AND engine_id = $3 AND status = 'running'
               RETURNING id, rank_base + GREATEST(service, COALESCE($7, service)) AS value),
           ev AS (
               INSERT INTO call_events (call_id, kind, actor, level, engine_id, reason, value,
                                        other_call_id)
               SELECT id, 'preempt', $3, $5, $3, $6, value, $9 FROM upd)
           SELECT id FROM upd""",
        call_id,
        attempts,
        engine_id,
        output_token_ids,
        level,
        reason,
        service,
        run_s,
        other_call_id,
        output_logprobs,
    )
    return got is not None


async def save_progress(
    conn: Conn, engine_id: str, items: Sequence[tuple[str, int, list[int], str | None]]
) -> None:
    """Persist tokens generated so far for running calls (call_id, attempts, token_ids, their
    logprobs as JSON text or None), so a call re-dispatched after its engine is lost resumes
    instead of starting over, with its earlier logprobs when it asked for them.

    Never backwards: an attempt's output only grows, but two saves of one call can be in flight
    on two connections at once (the periodic save and the hand-back's final one when a backend
    dies), and the older, shorter one may commit last. Had it won, the next engine would resume
    from the older point and replay tokens the caller already has."""
    if not items:
        return
    await conn.executemany(
        """UPDATE calls SET output_token_ids = $3, completion_tokens = cardinality($3::int[]),
                            output_logprobs = $5::text::json
           WHERE id = $1 AND attempts = $2 AND engine_id = $4 AND status = 'running'
             AND coalesce(cardinality(output_token_ids), 0) <= cardinality($3::int[])""",
        # in call-id order, the order every multi-call statement locks call rows in (see
        # `fold_progress`): in any other order, this transaction and a scheduler's fold of the
        # same calls each held a row the other wanted (measured: DeadlockDetectedError)
        [
            (cid, att, toks, engine_id, lps)
            for cid, att, toks, lps in sorted(items, key=lambda i: i[0])
        ],
    )


async def owned_calls(conn: Conn, engine_id: str, call_ids: Sequence[str]) -> dict[str, int]:
    """{call_id: attempts} of the given calls this engine still owns (active, engine_id = it)."""
    rows = await conn.fetch(
        """SELECT id, attempts FROM calls
           WHERE id = ANY($1::text[]) AND engine_id = $2 AND status = ANY($3::text[])""",
        list(call_ids),
        engine_id,
        list(ACTIVE),
    )
    return {r["id"]: r["attempts"] for r in rows}
