"""The migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

from vgen_app.db import make_engine


def _diff(url: str) -> list:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            return compare_metadata(ctx, SQLModel.metadata)
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
