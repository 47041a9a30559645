"""`vgen` command line: what an operator needs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vgen_app.config import ROOT, get_settings


def migrate(database_url: str | None = None, revision: str = "head") -> None:
    """Apply the Alembic migrations (to DATABASE_URL unless a URL is given)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "alembic"))
    cfg.attributes["configure_logger"] = False
    if database_url:
        cfg.attributes["database_url"] = database_url
    command.upgrade(cfg, revision)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vgen")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("migrate", help="apply database migrations to DATABASE_URL")
    sub.add_parser("settings", help="print the effective configuration (secrets hidden)")
    outbox = sub.add_parser("outbox", help="list the mail outbox folder, newest last")
    outbox.add_argument("--last", type=int, default=10)
    args = parser.parse_args(argv)

    if args.cmd == "migrate":
        migrate()
        print(f"migrated {get_settings().database_url.split('@')[-1]}")
    elif args.cmd == "settings":
        for key, value in get_settings().model_dump().items():
            secret = any(s in key for s in ("token", "key", "secret")) and value
            print(f"{key.upper()}={'***' if secret else value}")
    elif args.cmd == "outbox":
        folder = Path(get_settings().mail_outbox_dir)
        files = sorted(folder.glob("*.eml")) if folder.exists() else []
        for f in files[-args.last :]:
            print(f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
