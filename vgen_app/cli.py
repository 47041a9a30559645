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


def _bigquery_init() -> int:
    from vgen_app.adapters.analytics import init_tables, make_client

    settings = get_settings()
    if not settings.bigquery_project:
        print(
            "BIGQUERY_PROJECT is not set: nothing to create (analytics stay in the local outbox)."
        )
        return 2
    client = make_client(settings.bigquery_project, settings.bigquery_api_endpoint)
    tables = init_tables(
        client, settings.bigquery_project, settings.bigquery_dataset, settings.bigquery_location
    )
    dataset = f"{settings.bigquery_project}.{settings.bigquery_dataset}"
    print(f"dataset {dataset}: ok; tables (day-partitioned on timestamp): {', '.join(tables)}")
    return 0


def _analytics_status() -> int:
    from vgen_app.db import with_db
    from vgen_app.services import shipping

    st = with_db(shipping.status)
    age = f"{st.oldest_pending_age_s:.0f} s" if st.oldest_pending_age_s is not None else "-"
    print(f"destination: {st.destination}")
    print(
        f"pending: {st.pending}  failed: {st.failed}  delivered: {st.delivered}  oldest pending: {age}"
    )
    for line in st.failed_examples:
        print(f"  failed {line}")
    return 1 if st.failed else 0


def _user(query: str) -> int:
    from vgen_app.db import with_db
    from vgen_app.services import admin

    found = with_db(admin.find_by_email, query) if "@" in query else []
    if not found:
        view = with_db(admin.get_user, query) if "@" not in query else None
        found = [view] if view else []
    if not found:
        print(f"no user {query!r}")
        return 1
    for u in found:
        print(
            f"id={u.id} email={u.email} status={u.status} balance={u.balance} "
            f"created={u.created_at}"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vgen")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("migrate", help="apply database migrations to DATABASE_URL")
    sub.add_parser("settings", help="print the effective configuration (secrets hidden)")
    outbox = sub.add_parser("outbox", help="list the mail outbox folder, newest last")
    outbox.add_argument("--last", type=int, default=10)
    bq = sub.add_parser("bigquery", help="BigQuery: `init` creates the dataset and tables")
    bq.add_argument("action", choices=["init"])
    an = sub.add_parser("analytics", help="the analytics outbox: `status`, `retry-failed`")
    an.add_argument("action", choices=["status", "retry-failed"])
    user = sub.add_parser("user", help="look up a user by e-mail or id")
    user.add_argument("query")
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
    elif args.cmd == "user":
        return _user(args.query)
    elif args.cmd == "bigquery":
        return _bigquery_init()
    elif args.cmd == "analytics":
        if args.action == "status":
            return _analytics_status()
        from vgen_app.db import with_db
        from vgen_app.services import shipping

        print(f"{with_db(shipping.retry_failed)} failed rows will be retried")
    return 0


if __name__ == "__main__":
    sys.exit(main())
