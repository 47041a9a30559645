"""Migrations for SQLite and PostgreSQL; the URL comes from vgen's settings (DATABASE_URL)."""

from logging.config import fileConfig

from alembic import context
from sqlmodel import SQLModel

import vgen_app.models  # noqa: F401  (registers the tables)
from vgen_app.db import get_engine, make_engine

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = SQLModel.metadata


def run_migrations_online() -> None:
    url = config.attributes.get("database_url")
    engine = make_engine(url) if url else get_engine()
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    if url:
        engine.dispose()


run_migrations_online()
