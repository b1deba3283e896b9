"""Generate `docs/asyncapi.yaml` (AsyncAPI 3.0) from the protocol models and `Subjects`.

Why generated: the document other languages build against must say exactly what the code sends.
`tests/unit/test_asyncapi.py` regenerates it and fails on any difference with the committed file.
Run `python -m autellix.wire.asyncapi docs/asyncapi.yaml` after changing `autellix.wire.protocol`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from autellix.wire import protocol
from autellix.wire.protocol import PROTOCOL_VERSION, Subjects

REF = "#/components/schemas/{model}"


def _messages() -> dict[str, type[BaseModel]]:
    return {
        "CallRequest": protocol.CallRequest,
        "CallAccepted": protocol.CallAccepted,
        "TokenDelta": protocol.TokenDelta,
        "CallFinal": protocol.CallFinal,
        "CallError": protocol.CallError,
        "ProgramOpen": protocol.ProgramOpen,
        "ProgramClose": protocol.ProgramClose,
        "ProgramReply": protocol.ProgramReply,
        "CallCancel": protocol.CallCancel,
        "CallCancelReply": protocol.CallCancelReply,
        "CallResume": protocol.CallResume,
        "CallResumeReply": protocol.CallResumeReply,
        "ProgramCancel": protocol.ProgramCancel,
        "ProgramCancelReply": protocol.ProgramCancelReply,
        "ScheduleCall": protocol.ScheduleCall,
        "Dispatch": protocol.Dispatch,
        "DirectReply": protocol.DirectReply,
        "Control": protocol.Control,
        "EngineHeartbeat": protocol.EngineHeartbeat,
        "EngineHeartbeats": protocol.EngineHeartbeats,
        "ServiceReport": protocol.ServiceReport,
    }


def build(namespace: str = "autellix") -> dict[str, Any]:
    s = Subjects(namespace)
    models = _messages()
    _, defs = models_json_schema([(m, "serialization") for m in models.values()], ref_template=REF)
    schemas = defs.get("$defs", {})

    trace_headers = {
        "traceparent": {
            "type": "string",
            "description": "W3C trace context (optional): the services continue this trace. "
            "Without it, every call of a program joins one trace derived from the program id "
            "(docs/observability.md).",
            "examples": ["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"],
        },
        "tracestate": {"type": "string", "description": "W3C trace state (optional)"},
    }
    js_headers = trace_headers | {
        "Nats-Msg-Id": {
            "type": "string",
            "description": "JetStream de-duplication id (`<call_id>` into the scheduling "
            "queue, `<call_id>:<attempt>` into dispatch)",
        }
    }
    jetstream = {"ScheduleCall", "Dispatch"}
    no_headers = {
        "CallAccepted",
        "TokenDelta",
        "CallFinal",
        "CallError",
        "ProgramReply",
        "CallCancelReply",
        "CallResumeReply",
        "ProgramCancelReply",
        "DirectReply",
    }

    def msg(name: str, summary: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": name,
            "title": name,
            "summary": summary,
            "contentType": "application/json",
        }
        if name not in no_headers:
            out["headers"] = {
                "type": "object",
                "properties": js_headers if name in jetstream else trace_headers,
            }
        out["payload"] = {"$ref": REF.format(model=name)}
        return out

    messages = {
        "CallRequest": msg("CallRequest", "One tagged LLM call: program, thread, parents, prompt."),
        "CallAccepted": msg("CallAccepted", "The call is stored and queued; it will be answered."),
        "TokenDelta": msg("TokenDelta", "New completion tokens; `offset` de-duplicates replays."),
        "CallFinal": msg("CallFinal", "Terminal: usage, timing and the engine that served it."),
        "CallError": msg("CallError", "Terminal: a typed error."),
        "ProgramOpen": msg("ProgramOpen", "Open a program (session)."),
        "ProgramClose": msg("ProgramClose", "Close a program; returns final statistics."),
        "ProgramReply": msg("ProgramReply", "Program state and statistics."),
        "CallCancel": msg("CallCancel", "Cancel a call (by id or client_call_id); idempotent."),
        "CallCancelReply": msg("CallCancelReply", "Whether the cancel ended the call, or why not."),
        "CallResume": msg("CallResume", "Where a call stands, from Postgres (after lost replies)."),
        "CallResumeReply": msg("CallResumeReply", "Status, stored tokens from offset, answer."),
        "ProgramCancel": msg("ProgramCancel", "Cancel every unfinished call of a program."),
        "ProgramCancelReply": msg("ProgramCancelReply", "The calls a program cancel ended."),
        "ScheduleCall": msg("ScheduleCall", "Internal: frontend → schedulers (JetStream)."),
        "Dispatch": msg("Dispatch", "Internal: scheduler → one engine at one MLFQ level."),
        "DirectReply": msg(
            "DirectReply", "Internal: answer to a direct offer (taken, or use JetStream)."
        ),
        "Control": msg("Control", "Internal: preempt / set_level / cancel (idempotent)."),
        "EngineHeartbeat": msg("EngineHeartbeat", "Internal: engine liveness and load."),
        "EngineHeartbeats": msg(
            "EngineHeartbeats", "Internal: an engine host's identities' heartbeats, batched."
        ),
        "ServiceReport": msg("ServiceReport", "Internal: per-call progress (service accounting)."),
    }

    def refs(*names: str) -> dict[str, Any]:
        return {n: {"$ref": f"#/components/messages/{n}"} for n in names}

    engine_param = {"engineId": {"description": "engine id (from its heartbeat)"}}
    level_param = {"level": {"description": "MLFQ level, 0 = highest priority"}}
    channels: dict[str, Any] = {
        "submit": {
            "address": s.submit,
            "description": "Submit a call. Set the NATS reply subject to your inbox: it receives "
            "CallAccepted or CallError, then TokenDelta*, then CallFinal or CallError.",
            "messages": refs("CallRequest"),
        },
        "callReplies": {
            "address": None,
            "description": "The caller's inbox (the reply subject of the submit request).",
            "messages": refs("CallAccepted", "TokenDelta", "CallFinal", "CallError"),
        },
        "programOpen": {"address": s.program_open, "messages": refs("ProgramOpen")},
        "programClose": {"address": s.program_close, "messages": refs("ProgramClose")},
        "programReplies": {"address": None, "messages": refs("ProgramReply", "CallError")},
        "cancel": {
            "address": s.cancel,
            "description": "Cancel a call. The call's caller gets CallError(cancelled) on its "
            "inbox; the engine running it gets Control(cancel).",
            "messages": refs("CallCancel"),
        },
        "cancelReplies": {"address": None, "messages": refs("CallCancelReply", "CallError")},
        "resume": {
            "address": s.resume,
            "description": "Resume a call whose replies may have been lost (a NATS restart, a "
            "gap, a silence): its stored tokens from `offset` and, once ended, its answer.",
            "messages": refs("CallResume"),
        },
        "resumeReplies": {"address": None, "messages": refs("CallResumeReply", "CallError")},
        "programCancel": {
            "address": s.program_cancel,
            "description": "Cancel every unfinished call of a program, on every engine: each "
            "call's caller gets CallError(cancelled), each engine Control(cancel).",
            "messages": refs("ProgramCancel"),
        },
        "programCancelReplies": {
            "address": None,
            "messages": refs("ProgramCancelReply", "CallError"),
        },
        "schedCalls": {
            "address": s.sched_calls,
            "description": f"JetStream stream `{s.calls_stream}`; durable consumer "
            f"`{s.scheduler_durable}` shared by all scheduler replicas.",
            "messages": refs("ScheduleCall"),
        },
        "schedDirect": {
            "address": s.sched_direct,
            "description": "Core request/reply, queue group `scheduler`: a ScheduleCall offered "
            "to the schedulers directly; answered DirectReply. Not taken, or no answer in time "
            "→ the frontend publishes it to schedCalls (docs/protocol.md, Direct hops).",
            "messages": refs("ScheduleCall"),
        },
        "dispatchDirect": {
            "address": f"{s.dispatch_prefix}.{{engineId}}.direct",
            "description": "Core request/reply: a Dispatch offered to one engine directly; "
            "answered DirectReply. Not taken, or no answer in time → the scheduler publishes "
            "it to dispatch.",
            "parameters": engine_param,
            "messages": refs("Dispatch"),
        },
        "directReplies": {"address": None, "messages": refs("DirectReply")},
        "dispatch": {
            "address": f"{s.dispatch_prefix}.{{engineId}}.q.{{level}}",
            "description": f"JetStream stream `{s.dispatch_stream}`.",
            "parameters": engine_param | level_param,
            "messages": refs("Dispatch"),
        },
        "control": {
            "address": f"{s.dispatch_prefix}.{{engineId}}.control",
            "parameters": engine_param,
            "messages": refs("Control"),
        },
        "heartbeat": {
            "address": s.heartbeat,
            "messages": refs("EngineHeartbeat", "EngineHeartbeats"),
        },
        "reports": {
            "address": s.reports,
            "description": f"JetStream stream `{s.reports_stream}`.",
            "messages": refs("ServiceReport"),
        },
    }

    def op(action: str, channel: str, summary: str, reply: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{channel}"},
            "summary": summary,
        }
        if reply:
            out["reply"] = {
                "address": {"location": "$message.header#/reply_to"},
                "channel": {"$ref": f"#/channels/{reply}"},
            }
        return out

    operations = {
        "submitCall": op("send", "submit", "Clients submit a call", reply="callReplies"),
        "openProgram": op("send", "programOpen", "Open a program", reply="programReplies"),
        "closeProgram": op("send", "programClose", "Close a program", reply="programReplies"),
        "cancelCall": op("send", "cancel", "Cancel a call", reply="cancelReplies"),
        "resumeCall": op("send", "resume", "Resume a call", reply="resumeReplies"),
        "cancelProgram": op(
            "send", "programCancel", "Cancel a program's calls", reply="programCancelReplies"
        ),
        "scheduleCall": op("send", "schedCalls", "Frontend enqueues an accepted call"),
        "dispatchCall": op("send", "dispatch", "Scheduler dispatches to an engine level"),
        "offerScheduleCall": op(
            "send", "schedDirect", "Frontend offers a call to the schedulers", reply="directReplies"
        ),
        "offerDispatch": op(
            "send", "dispatchDirect", "Scheduler offers a call to an engine", reply="directReplies"
        ),
        "controlEngine": op(
            "send", "control", "Scheduler preempts / re-levels a call; frontend cancels one"
        ),
        "engineHeartbeat": op("send", "heartbeat", "Engines announce liveness and load"),
        "serviceReport": op("send", "reports", "Engines report progress of running calls"),
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Autellix",
            "version": f"{PROTOCOL_VERSION}.0.0",
            "description": "Program-aware LLM serving over NATS. Every payload is UTF-8 JSON. "
            f"Subjects shown for the default namespace `{namespace}`; see docs/protocol.md.",
        },
        "defaultContentType": "application/json",
        "servers": {"local": {"host": "localhost:4222", "protocol": "nats", "description": "NATS"}},
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def render(namespace: str = "autellix") -> str:
    header = "# GENERATED by `python -m autellix.wire.asyncapi docs/asyncapi.yaml`; do not edit.\n"
    return header + yaml.safe_dump(build(namespace), sort_keys=False, width=100)


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/asyncapi.yaml")
    target.write_text(render())
    print(target)
