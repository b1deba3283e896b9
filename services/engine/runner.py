"""The engine's scheduler-of-record for its own calls: admission, preemption, streaming, finishing.

One `EngineRunner` per engine process. Calls arrive as `Dispatch` messages (`offer`), wait in
`LevelQueues`, and are admitted while fewer than `backend.max_batch` run, highest level first;
each admitted call runs one *segment* (a backend generation) at a time. A call is answered once,
by the owner of its latest attempt: every transition in Postgres is conditional on it.

Where each job lives (one module each; `EngineRunner` is their union over `RunnerState`):

| job | module |
|---|---|
| the call and its rank key; the per-level waiting queues | `call.py`, `queues.py` |
| which calls run: intake and admission (`plan_batch`) | `admission.py` |
| preemption: abort the backend request, re-queue, resume as a continuation | `preempt.py` |
| one segment: prompt, start, generate, how it ended | `segments.py` |
| tokens to the caller (`TokenDelta`) | `streaming.py` |
| finish (`CallFinal`), fail (`CallError`), drop, lose | `finish.py` |
| Postgres writes: batched starts, retries, progress saves | `ledger.py` |
| the schedulers' `Control` messages | `control.py` |
| `ServiceReport`s to the schedulers | `reports.py` |
| hand-back: orphans, drain, backend death | `handback.py` |
"""

from __future__ import annotations

from autellix.services.engine.admission import Admission
from autellix.services.engine.control import ControlHandling
from autellix.services.engine.finish import Finishing
from autellix.services.engine.handback import HandBack
from autellix.services.engine.ledger import Ledger
from autellix.services.engine.preempt import Preemption
from autellix.services.engine.reports import Reports
from autellix.services.engine.segments import Segments
from autellix.services.engine.state import RunnerConfig, RunnerState
from autellix.services.engine.streaming import Streaming

__all__ = ["EngineRunner", "RunnerConfig", "RunnerState"]


class EngineRunner(
    Admission,
    Preemption,
    Segments,
    Streaming,
    Finishing,
    Ledger,
    ControlHandling,
    Reports,
    HandBack,
):
    """The engine's calls, from Dispatch to answer; constructed as `RunnerState`."""
