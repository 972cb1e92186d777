"""Alembic environment for the prediction store.

Normally run programmatically by `digitlab.store.db.upgrade(engine)`, which hands over an open connection
in `config.attributes["connection"]`. For hand use (`alembic revision --autogenerate`), pass the URL with
`-x url=...`; without it the URL comes from digitlab's Settings (DATABASE_URL / POSTGRES_* / SQLite).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from digitlab.store.models import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from digitlab.core.config import Settings

    return Settings().sqlalchemy_url


def _configure(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite can only ALTER via table copies
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        return
    engine = create_engine(_url())
    try:
        with engine.connect() as conn:
            _configure(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
