"""Alembic migrations (installed as `autellix.migrations`); run them with `autellix db upgrade`."""
