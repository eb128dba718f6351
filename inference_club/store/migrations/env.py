"""Alembic environment: runs on the connection handed over by ``store.migrate``."""

from __future__ import annotations

from alembic import context

from inference_club.store.tables import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only via the alembic command line
    raise RuntimeError("run migrations with `inference-club migrate`")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
