"""Alembic environment of the assessment store.

``AssessmentStore`` runs the migrations itself on open (``boneage.service.store.migration_config``
builds the Alembic configuration in code and hands over an open connection in
``config.attributes["connection"]``), so no ``alembic.ini`` is needed at runtime. A new revision is
written with ``alembic revision`` against a config built by ``migration_config(url=...)``; SQLite
migrations run in batch mode, so later ``ALTER`` steps work there too.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import engine_from_config, pool

from boneage.service.store import Base

config = context.config
target_metadata = Base.metadata


def run_offline() -> None:
    """Write the SQL to stdout instead of running it (``alembic upgrade head --sql``)."""
    url = config.get_main_option("sqlalchemy.url")
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=url is not None and url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = engine_from_config(config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.", poolclass=pool.NullPool)
    with engine.begin() as connection:
        _run(connection)
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
