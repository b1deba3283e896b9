"""Call states and the rule every state change follows.

The rule that makes the system crash-safe, followed by every statement in `autellix.store`:
**every state change of a call is a conditional UPDATE** that names the state it expects
(`WHERE status IN (...) AND attempts = $n AND engine_id = $e`). Whoever's update matches owns
the transition; everybody else sees zero rows and backs off. Redelivered messages, two
scheduler replicas, a zombie engine that comes back after its calls were re-dispatched: all
reduce to "the second UPDATE matches nothing".

Call states: queued → dispatched → running ⇄ preempted → finished | failed. `attempts` counts
dispatches: a dispatch moves `attempts` from k to k+1, and an engine only owns a call while
`engine_id` is itself and `attempts` equals the attempt it was handed (Dispatch.attempt + 1).
Every decision also writes a `call_events` row (kind dispatch | requeue | preempt | finish | fail
| republish) in the same statement, so a call's history explains itself.

The statements live in one module per step of a call's life: `accept` (frontend), `dispatch`
(scheduler), `running` (engine), `progress` and `levels` (live service and MLFQ levels),
`finish` (finished, failed, cancelled), `requeue` (recovery); `programs` and `engines` manage
their own rows, `inspect` reads for tools.
"""

from __future__ import annotations

ACTIVE = ("dispatched", "running", "preempted")
TERMINAL = ("finished", "failed")
