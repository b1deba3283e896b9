"""Postgres schema (SQLAlchemy 2 declarative). Alembic migrations in `migrations/` own the DDL.

Postgres plays the paper's *program table*: it is the only place program state lives, so any
scheduler replica can take any call (replicas are stateless) and an engine restart loses nothing.
Change a model here → add a migration (`tests/test_store.py` checks they match).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    ARRAY,
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


def _now() -> Any:
    return func.now()


class Program(Base):
    """One agentic program (the paper's session)."""

    __tablename__ = "programs"
    __table_args__ = (
        # the idle-TTL sweep looks only at open programs (0002)
        Index("ix_programs_open_last_call", "last_call_at", postgresql_where="status = 'open'"),
    )

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default="open", server_default="open")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_call_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_finish_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # attained service (ATLAS scalar: longest critical path seen; PLAS on single-threaded)
    service: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    # total service of all its calls (work done), and waiting time accumulated by its calls
    total_service: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    waiting_s: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    calls_total: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    calls_finished: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # engine holding the program's KV cache (data-locality pin)
    engine_affinity: Mapped[str | None] = mapped_column(String(128))
    meta: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default="{}")
    # live attained service: finished calls (total_service) plus the folded progress of the
    # unfinished ones; PLAS bases a new call on it (0002)
    attained: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    # seconds its calls spent admitted in an engine batch
    run_s: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    # anti-starvation W_p / T_p: waiting and running seconds of finished calls since their last
    # promotion (docs/scheduling.md, "Anti-starvation")
    starve_wait_s: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    starve_run_s: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    # the tenant (HTTP API key) that opened it; NULL: opened without one (NATS, or an HTTP API
    # without keys). Set once, at creation; ownership checks and per-tenant admission read it
    # (0004)
    tenant: Mapped[str | None] = mapped_column(Text)


class Thread(Base):
    """A thread of a program; service per thread feeds ATLAS's critical path."""

    __tablename__ = "threads"

    program_id: Mapped[str] = mapped_column(
        ForeignKey("programs.id", ondelete="CASCADE"), primary_key=True
    )
    thread_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    service: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    calls: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Call(Base):
    """One LLM call: its request, where it is in its life, and what it cost."""

    __tablename__ = "calls"
    __table_args__ = (
        UniqueConstraint("program_id", "client_call_id", name="uq_calls_client_call_id"),
        Index("ix_calls_status_engine", "status", "engine_id"),
        Index("ix_calls_program", "program_id"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    program_id: Mapped[str] = mapped_column(ForeignKey("programs.id", ondelete="CASCADE"))
    thread_id: Mapped[str] = mapped_column(String(128))
    client_call_id: Mapped[str | None] = mapped_column(String(128))
    parent_ids: Mapped[list[str]] = mapped_column(ARRAY(String(128)), default=list)
    # queued → dispatched → running ⇄ preempted → finished | failed
    status: Mapped[str] = mapped_column(String(16), default="queued")
    level: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    priority: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    engine_id: Mapped[str | None] = mapped_column(String(128))
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    preemptions: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    reply_to: Mapped[str] = mapped_column(Text)
    request: Mapped[dict[str, Any]] = mapped_column(JSONB)
    accepted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    dispatched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    cached_tokens: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # service this call attained (decode tokens) and the program service it entered with
    service: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    queue_s: Mapped[float | None] = mapped_column(Float)
    run_s: Mapped[float | None] = mapped_column(Float)
    finish_reason: Mapped[str | None] = mapped_column(String(16))
    error_code: Mapped[str | None] = mapped_column(String(32))
    error_message: Mapped[str | None] = mapped_column(Text)
    # tokens generated so far (for resume after an engine is lost); kept short for sim engines
    output_token_ids: Mapped[list[int] | None] = mapped_column(ARRAY(Integer))
    # a finished call's output text as its final carried it (0003): answers rebuilt from the row
    output_text: Mapped[str | None] = mapped_column(Text)
    # per-token logprobs of output_token_ids, as compact JSON text (0005; `json` keeps it as
    # written): a moved call's earlier logprobs, which the next engine cannot compute again
    output_logprobs: Mapped[Any] = mapped_column(JSON, nullable=True)
    # live scheduling (0002). `priority` is the base the call was issued with (ATLAS accounting);
    # its rank value is `rank_base + service` (rank_base = priority until an anti-starvation
    # promotion restarts it at -service); `tiebreak` orders it inside its level; `aged` = sticky
    # top queue (age rule); W_c/T_c restart at `reset_at` / `reset_run_s`; `control_seq` numbers
    # the Control messages sent for it (engines apply each seq once).
    rank_base: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    tiebreak: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    aged: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    reset_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    reset_run_s: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    control_seq: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class CallEvent(Base):
    """Why a call is where it is: every decision (dispatch, level change, preemption, ...)."""

    __tablename__ = "call_events"
    __table_args__ = (Index("ix_call_events_call", "call_id", "at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    kind: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str | None] = mapped_column(String(128))
    level: Mapped[int | None] = mapped_column(Integer)
    engine_id: Mapped[str | None] = mapped_column(String(128))
    reason: Mapped[str | None] = mapped_column(Text)
    # the call's priority value (rank_base + service) when the event happened (0002)
    value: Mapped[float | None] = mapped_column(Float)
    # the other call in a decision: who preempted this one (0002)
    other_call_id: Mapped[str | None] = mapped_column(String(64))


class Engine(Base):
    """A registered engine: what it serves, and its latest heartbeat (load for balancing)."""

    __tablename__ = "engines"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    backend: Mapped[str] = mapped_column(String(16))
    model: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="up", server_default="up")
    max_batch: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    running: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    waiting: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    kv_cache_usage: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    meta: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default="{}")
