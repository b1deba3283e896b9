"""The tests' PgBouncer: `autellix.local.pgbouncer` (shared with `autellix bench cluster`)."""

from autellix.local.pgbouncer import PgBouncer, pgbouncer_binary

__all__ = ["PgBouncer", "pgbouncer_binary"]
