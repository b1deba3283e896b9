"""Postgres: schema (SQLAlchemy models, Alembic migrations) and the statements the services run.

One module per step of a call's life (see `autellix.store.states` for the rule they all
follow): `accept`, `dispatch`, `running`, `progress`, `levels`, `finish`, `requeue`; `programs`
and `engines` manage their own rows, `inspect` reads for tools, `db` opens connections.
"""
