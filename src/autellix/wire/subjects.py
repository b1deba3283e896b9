"""Every NATS subject name of protocol v1, derived from one namespace (`Subjects`)."""

from __future__ import annotations

from autellix.wire.base import (
    _NAMESPACE_RE,
    PROTOCOL_VERSION,
)


class Subjects:
    """Every NATS subject and JetStream stream name, derived from one namespace.

    The namespace lets several deployments (or test runs) share one NATS server.
    """

    def __init__(self, namespace: str = "autellix") -> None:
        if not _NAMESPACE_RE.match(namespace):
            raise ValueError(f"invalid namespace {namespace!r}: letters, digits, _ and -")
        self.namespace = namespace
        root = f"{namespace}.v{PROTOCOL_VERSION}"
        self.root = root
        #: core request/reply: `CallRequest` in, stream of replies to the NATS reply subject
        self.submit = f"{root}.call.submit"
        #: core request/reply: `ProgramOpen` / `ProgramClose` → `ProgramReply`
        self.program_open = f"{root}.program.open"
        self.program_close = f"{root}.program.close"
        #: core request/reply: `ProgramCancel` → `ProgramCancelReply`: every unfinished call
        self.program_cancel = f"{root}.program.cancel"
        #: core request/reply: `CallCancel` → `CallCancelReply` (or `CallError` for bad input)
        self.cancel = f"{root}.call.cancel"
        #: core request/reply: `CallResume` → `CallResumeReply`: a call's outcome and stored
        #: tokens from Postgres (a caller that may have missed replies, e.g. across a NATS restart)
        self.resume = f"{root}.call.resume"
        #: JetStream (stream `calls_stream`): accepted calls waiting for a scheduler decision
        self.sched_calls = f"{root}.sched.call"
        #: core request/reply, queue group of the schedulers: the direct hop (`direct.py`),
        #: `ScheduleCall` → `DirectReply`; not taken → the frontend uses `sched_calls`
        self.sched_direct = f"{root}.sched.direct"
        #: JetStream (stream `dispatch_stream`): `Dispatch` for one engine and MLFQ level
        self.dispatch_prefix = f"{root}.engine"
        #: core: `EngineHeartbeat` from every engine
        self.heartbeat = f"{root}.engine.heartbeat"
        #: JetStream (stream `reports_stream`): `ServiceReport` from engines to schedulers
        self.reports = f"{root}.report"
        # stream names may not contain dots
        self.calls_stream = f"{namespace}_calls"
        self.dispatch_stream = f"{namespace}_dispatch"
        self.reports_stream = f"{namespace}_reports"
        #: durable consumer shared by all scheduler replicas (work-queue semantics)
        self.scheduler_durable = "scheduler"

    def dispatch(self, engine_id: str, level: int) -> str:
        """Subject an engine consumes for calls of MLFQ `level` (0 = highest priority).

        The level is its own token (`q.<level>`): NATS wildcards match whole tokens only, so
        `q*` would be a literal, and `<engine_id>.*` would also match the control subject.
        """
        return f"{self.dispatch_prefix}.{engine_id}.q.{level}"

    def dispatch_all(self, engine_id: str) -> str:
        return f"{self.dispatch_prefix}.{engine_id}.q.*"

    def dispatch_wildcard(self) -> str:
        return f"{self.dispatch_prefix}.*.q.*"

    def dispatch_direct(self, engine_id: str) -> str:
        """Core request/reply subject of one engine's direct hop: `Dispatch` → `DirectReply`
        (not taken → the scheduler publishes to `dispatch(engine_id, level)`). Outside the
        dispatch stream's `engine.*.q.*`, so JetStream never stores or acknowledges it."""
        return f"{self.dispatch_prefix}.{engine_id}.direct"

    def control(self, engine_id: str) -> str:
        """Core subject for `Control` messages (preempt, set_level, cancel) to one engine."""
        return f"{self.dispatch_prefix}.{engine_id}.control"

    def all_subjects(self) -> dict[str, str]:
        """Documented subject table (used by docs generation and tests)."""
        return {
            "submit": self.submit,
            "program_open": self.program_open,
            "program_close": self.program_close,
            "program_cancel": self.program_cancel,
            "cancel": self.cancel,
            "resume": self.resume,
            "sched_calls": self.sched_calls,
            "sched_direct": self.sched_direct,
            "dispatch": self.dispatch("<engine_id>", 0).replace(".q.0", ".q.<level>"),
            "dispatch_direct": self.dispatch_direct("<engine_id>"),
            "control": self.control("<engine_id>"),
            "heartbeat": self.heartbeat,
            "reports": self.reports,
        }
