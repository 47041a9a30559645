"""The migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

from vgen_app.db import make_engine


def _same_on_sqlite(change: object) -> bool:
    # SQLite stores INTEGER and BIGINT alike (64-bit); the migration leaves that column alone there.
    if not isinstance(change, list) or len(change) != 1:
        return False
    op = change[0]
    return op[0] == "modify_type" and {type(op[-2]).__name__, type(op[-1]).__name__} <= {
        "INTEGER",
        "BigInteger",
        "Integer",
    }


def _diff(url: str) -> list:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(ctx, SQLModel.metadata)
            if engine.dialect.name == "sqlite":
                diff = [c for c in diff if not _same_on_sqlite(c)]
            return diff
    finally:
        engine.dispose()


def test_migrated_schema_matches_models(database_url: str) -> None:
    assert _diff(database_url) == []


def test_downgrade_and_upgrade_again(tmp_path) -> None:
    from alembic import command
    from alembic.config import Config

    from vgen_app.cli import migrate
    from vgen_app.config import ROOT

    url = f"sqlite:///{tmp_path / 'roundtrip.db'}"
    migrate(url)
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.attributes.update(database_url=url, configure_logger=False)
    command.downgrade(cfg, "base")
    migrate(url)
    assert _diff(url) == []
