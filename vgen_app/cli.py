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


def _find(query: str) -> list:
    """The user an operator names: by e-mail (with an @) or by id."""
    from vgen_app.db import with_db
    from vgen_app.services import accounts, admin

    if "@" in query:
        try:
            return with_db(admin.find_by_email, query)
        except accounts.AccountError:
            return []
    view = with_db(admin.get_user, query)
    return [view] if view else []


def _user(query: str) -> int:
    found = _find(query)
    if not found:
        print(f"no user {query!r}")
        return 1
    for u in found:
        print(
            f"id={u.id} email={u.email} status={u.status} balance={u.balance} "
            f"created={u.created_at}"
        )
    return 0


def _user_delete(query: str, yes: bool) -> int:
    """`vgen user delete <id|email> [--yes]`: what the admin API's DELETE /user/{id} does."""
    from vgen_app.services import erasure

    found = _find(query)
    if not found:
        print(f"no user {query!r}")
        return 1
    user = found[0]
    if not yes:
        if not sys.stdin.isatty():
            print("refusing to delete without --yes (stdin is not a terminal)", file=sys.stderr)
            return 2
        answer = input(
            f"Delete user {user.id} ({user.email}): their files, sessions and links, the account "
            "anonymised? [y/N] "
        )
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 1
    try:
        done = erasure.delete_user(user.id)
    except erasure.UserGone:
        print(f"user {user.id} is already deleted")
        return 1
    except erasure.AccountBusy as exc:
        print(f"not deleted: {exc.message}", file=sys.stderr)
        return 1
    print(
        f"deleted user {done.user_id} at {done.deleted_at.isoformat()}: "
        f"{done.tasks_deleted} tasks, {done.sessions} sessions, {done.links} links, "
        f"{done.files_removed} files removed, {done.files_failed} not removed"
    )
    return 1 if done.files_failed else 0


def _user_export(query: str, output: str | None) -> int:
    """`vgen user export <id|email> -o file.zip` (`-o -`: to stdout): the user's ZIP, streamed."""
    import os

    from vgen_app.services import erasure, export

    found = _find(query)
    if not found:
        print(f"no user {query!r}", file=sys.stderr)
        return 1
    user = found[0]
    try:
        chunks = export.stream_zip(user.id)
    except erasure.UserGone:
        print(f"user {user.id} is deleted: nothing to export", file=sys.stderr)
        return 1
    if output == "-":
        out = sys.stdout.buffer
        for chunk in chunks:
            out.write(chunk)
        out.flush()
        return 0
    dest = Path(output or export.filename())
    part = dest.with_name(f".{dest.name}.part")
    size = 0
    try:
        with part.open("wb") as out:
            for chunk in chunks:
                out.write(chunk)
                size += len(chunk)
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)
    print(f"exported user {user.id} to {dest} ({size:,} bytes)")
    return 0


def _backup(path: str) -> int:
    from vgen_app.services import backup

    try:
        done = backup.backup(get_settings().database_url, Path(path))
    except backup.BackupError as exc:
        print(f"backup refused: {exc}", file=sys.stderr)
        return 2
    print(
        f"backed up the {done.kind} database to {done.path} ({done.bytes:,} bytes, {done.seconds:.1f} s)"
    )
    return 0


def _restore(path: str, force: bool) -> int:
    from vgen_app.db import dispose_engines, with_db
    from vgen_app.services import backup

    try:
        done = backup.restore(get_settings().database_url, Path(path), force=force)
    except backup.BackupError as exc:
        print(f"restore refused: {exc}", file=sys.stderr)
        return 2
    dispose_engines()
    users, bad = with_db(backup.check)
    print(f"restored {done.path} ({done.bytes:,} bytes, {done.seconds:.1f} s): {users} users")
    for m in bad:
        print(f"  user {m.user_id}: balance {m.balance} but ledger sum {m.ledger_sum}")
    print("every balance equals its ledger sum" if not bad else f"{len(bad)} balances differ")
    return 1 if bad else 0


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
    user = sub.add_parser(
        "user",
        help="look up a user by e-mail or id; `user delete <id|email> [--yes]` deletes the "
        "account, `user export <id|email> -o file.zip` writes its data export",
    )
    user.add_argument("query", metavar="delete|export|ID_OR_EMAIL")
    user.add_argument("target", nargs="?", metavar="ID_OR_EMAIL")
    user.add_argument("--yes", action="store_true", help="delete: do not ask")
    user.add_argument("-o", "--output", help="export: the ZIP file to write (- for stdout)")
    bk = sub.add_parser(
        "backup", help="write a consistent copy of DATABASE_URL to PATH (safe while the app runs)"
    )
    bk.add_argument("path", metavar="PATH")
    rs = sub.add_parser(
        "restore", help="replace DATABASE_URL with the backup PATH (--force onto a vgen database)"
    )
    rs.add_argument("path", metavar="PATH")
    rs.add_argument("--force", action="store_true", help="overwrite a database that has tables")
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
        if args.target is None:
            return _user(args.query)
        if args.query == "delete":
            return _user_delete(args.target, args.yes)
        if args.query == "export":
            return _user_export(args.target, args.output)
        parser.error(f"user: unknown action {args.query!r} (delete or export)")
    elif args.cmd == "backup":
        return _backup(args.path)
    elif args.cmd == "restore":
        return _restore(args.path, args.force)
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
