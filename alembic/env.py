"""Migrations for SQLite, PostgreSQL and Cloudflare D1; the URL comes from vgen's settings
(DATABASE_URL)."""

from logging.config import fileConfig
from typing import Any

from alembic import context
from alembic.ddl.sqlite import SQLiteImpl
from sqlalchemy import Integer
from sqlmodel import SQLModel

import vgen_app.models  # noqa: F401  (registers the tables)
from vgen_app.db import get_engine, make_engine

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = SQLModel.metadata


class D1Impl(SQLiteImpl):
    """Cloudflare D1 (`cloudflare_d1`, docs/d1.md) is SQLite: Alembic needs this to know the name.

    Migration 0002 skips its INTEGER -> BIGINT `alter_column` for the dialect named "sqlite" only
    (applied migrations are never edited). SQLite has no ALTER COLUMN, and the change is a no-op
    there (INTEGER is 64-bit already), so a type-only change between integer types is skipped."""

    __dialect__ = "cloudflare_d1"

    def alter_column(self, table_name: str, column_name: str, **kw: Any) -> None:
        type_, existing = kw.get("type_"), kw.get("existing_type")
        integer_widening = isinstance(type_, Integer) and isinstance(existing, Integer)
        only_type = kw.get("nullable") is None and kw.get("server_default", False) is False
        if integer_widening and only_type and kw.get("name") is None:
            return
        super().alter_column(table_name, column_name, **kw)


def run_migrations_online() -> None:
    url = config.attributes.get("database_url")
    engine = make_engine(url) if url else get_engine()
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name in ("sqlite", "cloudflare_d1"),
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    if url:
        engine.dispose()


run_migrations_online()
